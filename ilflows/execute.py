"""Where ilflows starts external programs: directly (dp, lmp, packmol, xTB) or under custodian."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from ilflows.engine_guard import TIMED_OUT, TIMEOUT_MESSAGE
from ilflows.settings import IlflowsSettings, SettingsError, get_settings

_GUARD = str(Path(__file__).with_name("engine_guard.py"))
_time_limit: ContextVar[float | None] = ContextVar("engine_time_limit", default=None)


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Give every program started in the block at most ``seconds`` (None: no limit).

    A job sets it around its engine (the spec's ``time_limits``); the guard enforces it on the
    program's whole process group.
    """
    token = _time_limit.set(seconds)
    try:
        yield
    finally:
        _time_limit.reset(token)


def guarded(args: list[str]) -> list[str]:
    """Return ``args`` behind :mod:`ilflows.engine_guard`: the program dies with this process.

    The block's :func:`time_limit`, if any, goes with it.
    """
    limit = _time_limit.get() or 0
    return [sys.executable, "-I", "-S", _GUARD, str(os.getpid()), str(limit), *args]  # -S: starts in 25 ms


class EngineError(RuntimeError):
    """An external program failed; the message names it, its folder and the end of its log."""


class EngineTimeoutError(EngineError):
    """An external program ran past its time limit and was killed with its process group.

    An :class:`EngineError`: a DFT label that timed out is a failed label, and the campaign goes on.
    """


class EngineKilledError(RuntimeError):
    """An external program was killed by a signal: no result of the engine's, so the job fails.

    Not an :class:`EngineError`, which engines turn into a failed label: a CP2K killed by the
    out-of-memory killer or by a batch system's SIGTERM says nothing about its frame.
    """


def engine_env() -> dict[str, str]:
    """Environment for engine runs: thread counts pinned, TensorFlow quiet."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(get_settings().threads), **tensorflow_env())
    return env


def tensorflow_env() -> dict[str, str]:
    """Environment that TensorFlow (dp, lmp, in-process DeePMD) reads when it first loads.

    Its thread pools on the ``threads`` setting (unset, each takes every core of the node, beside
    the other workers' engines), its per-op log quiet, and the ``device`` setting's GPUs.
    """
    threads = str(get_settings().threads)
    return {
        "DP_INTRA_OP_PARALLELISM_THREADS": threads,
        "DP_INTER_OP_PARALLELISM_THREADS": "1",
        "TF_INTRA_OP_PARALLELISM_THREADS": threads,
        "TF_INTER_OP_PARALLELISM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **device_env(),
    }


def device_env() -> dict[str, str]:
    """Environment that keeps TensorFlow (dp, lmp, in-process DeePMD) to the ``device`` setting.

    Under 'cpu' no GPU is visible (TensorFlow takes one it sees); otherwise nothing changes.
    """
    return {"CUDA_VISIBLE_DEVICES": ""} if get_settings().device == "cpu" else {}


def choose_device(setting: str, cuda_available: bool) -> str:
    """Return the torch device, 'cuda' or 'cpu', of the ``device`` setting on this machine.

    Raises
    ------
    SettingsError
        When the setting is 'cuda' and torch sees no GPU.
    """
    if setting == "auto":
        return "cuda" if cuda_available else "cpu"
    if setting == "cuda" and not cuda_available:
        raise SettingsError(
            "setting device = 'cuda' (ILFLOWS_DEVICE): torch sees no GPU on this machine (a CPU build of "
            "torch, or CUDA_VISIBLE_DEVICES empty); set it to auto or cpu here, or install the GPU build "
            "(scripts/setup.sh --gpu)"
        )
    return setting


def torch_device(settings: IlflowsSettings | None = None) -> str:
    """Return the device of this process's torch work (MACE, the committee, D3): :func:`choose_device`."""
    import torch

    return choose_device((settings or get_settings()).device, torch.cuda.is_available())


@contextmanager
def torch_threads() -> Iterator[None]:
    """Run this process's torch work on the ``threads`` setting, as :func:`engine_env` pins engines.

    Left alone, torch takes every core: a validation scored beside a walker on two cores took
    three times as long (13 s instead of 4.5 s).  A process that has not loaded torch by then has
    no torch work (a committee of DeePMD or other members): nothing is set, and torch is not loaded.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(get_settings().threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def require_executable(command: str, setting: str) -> str:
    """Return the program of ``command`` or raise naming the setting that points at it."""
    program = shlex.split(command)[0]
    if shutil.which(program) is None:
        raise EngineError(
            f"executable '{program}' not found; install it (scripts/setup.sh) "
            f"or set ILFLOWS_{setting.upper()} to its path"
        )
    return program


def run_command(command: str | list[str], workdir: Path, log_name: str, stdin: Path | None = None) -> float:
    """Run ``command`` in ``workdir`` with stdout/stderr to ``log_name``; return wall time in s.

    ``stdin`` names a file given as standard input (a real file: Packmol rewinds it).  The
    program dies with this process (:func:`guarded`).  A program killed by a signal (the
    out-of-memory killer, a node's admin) runs once more, its first log kept as ``LOG.killed``:
    that says nothing about its input.

    Raises
    ------
    EngineError
        When the program exits non-zero; the message carries the last lines of its log.
    EngineTimeoutError
        When the program ran past the block's :func:`time_limit` (its group was killed).
    EngineKilledError
        When the program was killed by a signal twice.
    """
    args = shlex.split(command) if isinstance(command, str) else list(command)
    log = Path(workdir) / log_name
    for attempt in (1, 2):
        start = time.perf_counter()
        with open(log, "w") as out, open(stdin or os.devnull) as source:
            proc = subprocess.run(
                guarded(args),
                cwd=workdir,
                stdin=source,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=engine_env(),
            )
        wall = time.perf_counter() - start
        if proc.returncode >= 0:
            break
        signame = signal.Signals(-proc.returncode).name
        if attempt == 2:
            raise EngineKilledError(f"{args[0]} was killed by {signame} in {workdir} twice; rerun the job")
        os.replace(log, log.with_name(f"{log.name}.killed"))
    if proc.returncode == TIMED_OUT and TIMEOUT_MESSAGE in log.read_text(errors="replace"):
        raise EngineTimeoutError(f"{args[0]} timed out after {_time_limit.get():g} s in {workdir}; killed")
    if proc.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
        raise EngineError(f"{args[0]} exited {proc.returncode} in {workdir}: {tail}")
    return wall


POLL_S = 1  # custodian's poll of the running program (its default, 10 s, dwarfs a small label)


def run_custodian(
    job, handlers: list, workdir: Path, max_errors: int
) -> tuple[float, list[dict], str | None]:
    """Run one custodian job in ``workdir``.

    Returns
    -------
    tuple
        Wall time (s), the corrections custodian made (handler, errors, actions) and why it gave
        up (None when the job finished).

    """
    from custodian import Custodian
    from monty.json import jsanitize

    manager = Custodian(
        handlers, [job], max_errors=max_errors, polling_time_step=POLL_S, directory=str(workdir)
    )
    start = time.perf_counter()
    failure = None
    try:
        with warnings.catch_warnings():  # pymatgen warns on every unconverged SCF a handler reads
            warnings.simplefilter("ignore")
            manager.run()
    except Exception as err:  # custodian's own stops, and handlers that trip over a broken output
        failure = f"{type(err).__name__}: {err}"
    corrections = [
        {"handler": type(c["handler"]).__name__, "errors": c.get("errors"), "actions": c.get("actions")}
        for entry in manager.run_log
        for c in entry["corrections"]
    ]
    return time.perf_counter() - start, jsanitize(corrections), failure


def pinned_command(command: str) -> list[str]:
    """Return ``command`` behind ``env`` with ilflows' thread settings, dying with this process.

    Custodian starts it in this process, so :func:`guarded` applies as to :func:`run_command`.
    """
    pins = [f"{k}={v}" for k, v in engine_env().items() if os.environ.get(k) != v]
    return guarded(["env", *pins, *shlex.split(command)])
