"""Worker categories: a CPU worker runs DFT and bookkeeping jobs only, a GPU worker training and MD."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml
from cli_runs import FAKE_ONE_ITERATION, fake_engines_env, ilflows

SPEC = {"name": "cats", **FAKE_ONE_ITERATION}


def _ilflows(args: list[str], home: Path) -> subprocess.CompletedProcess:
    return ilflows(args, home, **fake_engines_env())


def _kinds(home: Path) -> dict[str, int]:
    rows = json.loads(_ilflows(["query", "labels", "--json"], home).stdout)
    trainings = json.loads(_ilflows(["query", "trainings", "--json"], home).stdout)
    explorations = json.loads(_ilflows(["query", "explorations", "--json"], home).stdout)
    return {"labels": len(rows), "trainings": len(trainings), "explorations": len(explorations)}


def test_each_worker_takes_only_its_category(tmp_path):
    spec = tmp_path / "cats.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert _ilflows(["submit", str(spec)], tmp_path).returncode == 0

    gpu = _ilflows(["worker", "--category", "gpu", "--quiet"], tmp_path)  # nothing of its own is ready
    assert gpu.returncode == 0 and "queue: 0/" in gpu.stdout
    cpu = _ilflows(["worker", "--category", "cpu", "--quiet"], tmp_path)
    assert cpu.returncode == 0, cpu.stderr[-2000:]
    assert _kinds(tmp_path) == {"labels": 2, "trainings": 0, "explorations": 0}  # stops at training

    gpu = _ilflows(["worker", "--category", "gpu", "--quiet"], tmp_path)
    assert gpu.returncode == 0, gpu.stderr[-2000:]
    assert _kinds(tmp_path) == {"labels": 2, "trainings": 2, "explorations": 1}  # the selection is CPU's
    status = json.loads(_ilflows(["status", "--json"], tmp_path).stdout)["cats"]
    assert status["iterations"] == []

    cpu = _ilflows(["worker", "--category", "cpu", "--quiet"], tmp_path)
    status = json.loads(_ilflows(["status", "--json"], tmp_path).stdout)["cats"]
    assert status["jobs"]["completed"] == status["jobs"]["total"]
    assert status["iterations"][0]["stop_reason"].startswith("max_iterations")
