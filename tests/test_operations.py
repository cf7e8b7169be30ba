"""Operations: status names failed jobs and what waits on them; rerun brings them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "name": "ops",
    "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
    "initial": {"density_factors": [1.0], "boxes_per_density": 2, "rattled_copies": 0},
    "train": {"n_models": 2, "overrides": {"training": {"numb_steps": 10, "disp_freq": 5, "save_freq": 10}}},
    "explore": {"n_steps": 20, "frame_every": 10, "n_walkers": 1},
    "guards": {"max_void": None},
    "loop": {"max_iterations": 1},
}


def _ilflows(args: list[str], home: Path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ILFLOWS_", "MONGOMOCK"))}
    return subprocess.run(
        [sys.executable, "-m", "ilflows.cli", *args],
        env={**base, "ILFLOWS_HOME": str(home), **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )


@pytest.mark.slow
def test_status_shows_a_failed_job_and_rerun_brings_it_back(tmp_path):
    spec = tmp_path / "ops.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    broken = tmp_path / "lmp"  # a LAMMPS that exists (so submit accepts it) but crashes
    broken.write_text("#!/bin/sh\necho 'ERROR: out of GPU memory' >&2\nexit 3\n")
    broken.chmod(0o755)
    first = _ilflows(["run", str(spec), "--quiet"], tmp_path, ILFLOWS_LMP_CMD=str(broken))
    assert first.returncode == 1 and "1 fizzled" in first.stdout

    status = _ilflows(["status", "ops"], tmp_path)
    assert "  fizzled  explore it0 w0: ilflows.execute.EngineError:" in status.stdout
    assert "0 jobs wait on them; `ilflows rerun ops` puts them back in the queue" in status.stdout
    report = json.loads(_ilflows(["status", "--json"], tmp_path).stdout)["ops"]
    assert report["jobs"]["fizzled"] == 1 and report["jobs"]["blocked"] == 0  # the select job tolerates it
    assert [row["stop_reason"] for row in report["iterations"]] == ["every exploration failed"]

    again = _ilflows(["rerun", "ops"], tmp_path)
    assert again.returncode == 0 and "1 jobs back in the queue\n  explore it0 w0" in again.stdout
    resumed = _ilflows(["run", str(spec), "--quiet"], tmp_path)  # the real lmp now
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    report = json.loads(_ilflows(["status", "--json"], tmp_path).stdout)["ops"]
    assert report["jobs"]["completed"] == report["jobs"]["total"] and report["fizzled"] == []
    # the selection ran again over the new exploration: one record, replaced, not a second one
    assert [row["stop_reason"][:14] for row in report["iterations"]] == ["max_iterations"]
    assert len(json.loads(_ilflows(["query", "trainings", "--json"], tmp_path).stdout)) == 2  # not retrained


def test_rerun_of_an_unknown_campaign_is_one_line(tmp_path):
    proc = _ilflows(["rerun", "nope"], tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr == "ilflows: error: campaign: no campaign named 'nope' in the queue; see ilflows status\n"
    )
