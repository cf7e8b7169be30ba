"""Start a program that dies with the process that started it: ``python engine_guard.py PPID PROGRAM ARGS``.

Run by path, not imported, so that it starts in milliseconds.  On Linux the kernel sends the
program SIGKILL when its parent (an ilflows worker) dies, however the worker died: a killed worker
leaves no CP2K, LAMMPS or dp running on the node beside the job's rerun.  ``exec`` keeps the pid,
so whoever started it (``subprocess`` or custodian) waits on and signals the program itself.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1

if __name__ == "__main__":
    parent, program = int(sys.argv[1]), sys.argv[2:]
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl: nobody waits for the program
            sys.exit(f"engine_guard: parent {parent} gone before {program[0]} started")
    os.execvp(program[0], program)
