"""Choose an engine by name: each seam keeps a table of ``name -> "module:Class"``."""

from __future__ import annotations

from importlib import import_module


def instantiate(table: dict[str, str], name: str, kind: str):
    """Import the class registered under ``name`` only now, and return an instance of it.

    Raises
    ------
    ValueError
        When ``table`` has no ``name``; the message says which ``kind`` and lists the known ones.

    """
    if name not in table:
        raise ValueError(f"unknown {kind} '{name}'; known: {', '.join(sorted(table))}")
    module, cls = table[name].split(":")
    return getattr(import_module(module), cls)()
