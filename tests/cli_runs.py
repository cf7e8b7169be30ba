"""Running the ``ilflows`` command line from tests: a fresh process on a store of its own, or, for
the commands that only read the embedded stores, this process."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ILFLOWS = [sys.executable, "-m", "ilflows.cli"]

# One PYR14+ BF4- pair, 2 packed boxes, 2 DeePMD models of 10 steps, one 20-step walker, one
# iteration: the smallest whole campaign, for tests of the queue rather than of the science.
ONE_ITERATION = {
    "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
    "initial": {"density_factors": [1.0], "boxes_per_density": 2, "rattled_copies": 0},
    "train": {"n_models": 2, "overrides": {"training": {"numb_steps": 10, "disp_freq": 5, "save_freq": 10}}},
    "explore": {"n_steps": 20, "frame_every": 10, "n_walkers": 1},
    "guards": {"max_void": None},
    "loop": {"max_iterations": 1},
}


# The same campaign on the fake engines of fake_engines.py (pair-potential labels, least-squares
# members, a random walk): seconds instead of minutes, for tests of the queue and the commands.
FAKE_ONE_ITERATION = {
    **ONE_ITERATION,
    "dft": {"engine": "pair-dft"},
    "train": {"engine": "pair-fit", "n_models": 2},
    "explore": {**ONE_ITERATION["explore"], "engine": "rattle-walk"},
    "select": {"trust_lo": 1e-6},  # the members never agree this well: candidates, as with real ones
}


def fake_engines_env(fail: str = "") -> dict[str, str]:
    """Environment under which ``ilflows`` and its workers register the fake engines.

    ``fail``: comma-separated seams whose fake engine fails (dft, train, explore), as a broken
    program would.
    """
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")) if p)
    return {"ILFLOWS_PLUGINS": "fake_engines", "PYTHONPATH": path, "FAKE_ENGINES_FAIL": fail}


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without ilflows' settings, on the store in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ILFLOWS_", "MONGOMOCK"))}
    return {**env, "ILFLOWS_HOME": str(home), **extra}


def ilflows(args: list[str], home: Path, timeout: int = 900, **extra: str) -> subprocess.CompletedProcess:
    """Run ``ilflows ARGS`` on the store in ``home`` (``extra``: more environment variables)."""
    return subprocess.run(
        [*ILFLOWS, *args],
        env=cli_env(home, **extra),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


@contextlib.contextmanager
def registries_kept() -> Iterator[None]:
    """Put the engine registries back as they were when the block ends (a test registered some)."""
    from ilflows.dft import ENGINES
    from ilflows.explore import EXPLORERS
    from ilflows.train import TRAINERS

    registries = (ENGINES, TRAINERS, EXPLORERS)
    saved = [dict(registry.table) for registry in registries]
    try:
        yield
    finally:
        for registry, table in zip(registries, saved, strict=True):
            registry.table = table


# Commands that read the stores and print; ``export`` and ``report`` write files, not the stores.
READERS = {"status", "query", "report", "export"}


def ilflows_read(args: list[str], home: Path, **extra: str) -> subprocess.CompletedProcess:
    """Run ``ilflows ARGS`` for a reader command in this process, on the embedded store in ``home``.

    What it prints is what a fresh process prints (the same ``main``, environment and settings),
    without the 1.5-2.5 s of imports a process costs; tests of a command's own start-up, signals
    or MongoDB use :func:`ilflows`.  Engines a plugin registers are unregistered afterwards.
    """
    from ilflows.cli import main
    from ilflows.registry import load_plugins
    from ilflows.settings import get_settings

    if args[0] not in READERS:
        raise ValueError(f"{args[0]} is not a reader command; run it with ilflows()")
    before = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(cli_env(home, **extra))
    get_settings.cache_clear()
    load_plugins.cache_clear()
    try:
        with registries_kept(), contextlib.chdir(ROOT):
            if "fake_engines" in os.environ.get("ILFLOWS_PLUGINS", ""):
                import fake_engines  # imported once per process: register again, as a fresh process does

                fake_engines.register()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(args)
    finally:
        os.environ.clear()
        os.environ.update(before)
        get_settings.cache_clear()
        load_plugins.cache_clear()
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def left_after(entry: str, timeout: float) -> list[str]:
    """Wait up to ``timeout`` s for the processes whose environment holds ``entry`` to leave; return
    those still there (killed processes take a moment to leave the process table)."""
    deadline = time.time() + timeout
    while (left := processes_with_env(entry)) and time.time() < deadline:
        time.sleep(0.05)
    return left


def processes_with_env(entry: str) -> list[str]:
    """Command lines of the live processes whose environment holds ``entry`` (e.g. ``"TOY_LOG=/x"``)."""
    mark = entry.encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if mark in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone, or not ours
            continue
    return found
