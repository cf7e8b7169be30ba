"""Versions of the software behind each record: what an atomate2 user looks for in a document."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def software(packages: tuple[str, ...] = (), **programs: str | None) -> dict[str, str]:
    """Return name -> version of ilflows, the installed ones of ``packages`` and the ``programs`` given.

    ``programs``: versions read from an engine's own output (e.g. ``cp2k="2023.1"``); None
    (not printed) is recorded as "unknown".
    """
    from ilflows import __version__

    found = {"ilflows": __version__}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:  # e.g. tensorflow where tensorflow-cpu is the build installed
            continue
    found.update({name: text or "unknown" for name, text in programs.items()})
    return found
