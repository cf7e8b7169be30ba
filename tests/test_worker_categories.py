"""Worker categories: a CPU worker runs DFT and bookkeeping jobs only, a GPU worker training and MD."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from cli_runs import FAKE_ONE_ITERATION, fake_engines_env, ilflows

from ilflows.settings import IlflowsSettings
from ilflows.store import get_jobstore

SPEC = {"name": "cats", **FAKE_ONE_ITERATION}


def _ilflows(args: list[str], home: Path) -> subprocess.CompletedProcess:
    return ilflows(args, home, **fake_engines_env())


@contextmanager
def _store(home: Path) -> Iterator:
    """The results store in ``home``, read here: a command line per query would take seconds."""
    store = get_jobstore(IlflowsSettings(home=home))
    store.connect()
    try:
        yield store
    finally:
        store.close()


def _records(home: Path) -> dict[str, int]:
    """How many records of each kind the jobs stored."""
    with _store(home) as store:
        return {kind: store.count({"output.kind": kind}) for kind in KINDS}


KINDS = ("dft_label", "training", "exploration", "selection")


def test_each_worker_takes_only_its_category(tmp_path):
    spec = tmp_path / "cats.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert _ilflows(["submit", str(spec)], tmp_path).returncode == 0

    gpu = _ilflows(["worker", "--category", "gpu", "--quiet"], tmp_path)  # nothing of its own is ready
    assert gpu.returncode == 0 and "queue: 0/" in gpu.stdout
    cpu = _ilflows(["worker", "--category", "cpu", "--quiet"], tmp_path)
    assert cpu.returncode == 0, cpu.stderr[-2000:]
    assert _records(tmp_path) == {"dft_label": 2, "training": 0, "exploration": 0, "selection": 0}

    gpu = _ilflows(["worker", "--category", "gpu", "--quiet"], tmp_path)
    assert gpu.returncode == 0, gpu.stderr[-2000:]
    # the selection is CPU's
    assert _records(tmp_path) == {"dft_label": 2, "training": 2, "exploration": 1, "selection": 0}

    cpu = _ilflows(["worker", "--category", "cpu", "--quiet"], tmp_path)
    assert cpu.returncode == 0, cpu.stderr[-2000:]
    done, total = re.search(r"queue: (\d+)/(\d+) jobs completed, 0 fizzled", cpu.stdout).groups()
    assert done == total
    with _store(tmp_path) as store:
        selection = store.query_one({"output.kind": "selection"})["output"]
    assert selection["iteration"] == 0 and selection["stop_reason"].startswith("max_iterations")
