"""A real queue: ``ilflows qlaunch`` submits a worker of a campaign to a one-node SLURM cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from cli_runs import ONE_ITERATION, ROOT, ilflows

pytest_plugins = ["slurm_cluster"]

VENV = Path(sys.executable).parent.parent


@pytest.mark.slow
def test_qlaunch_runs_a_campaign_through_slurm(slurm_cluster, tmp_path):
    spec = tmp_path / "queue.yaml"
    spec.write_text(yaml.safe_dump({"name": "queue", **ONE_ITERATION}))
    assert ilflows(["submit", str(spec)], tmp_path).returncode == 0

    # the shipped template, with a worker of every category and one job process per task asked for
    qadapter = yaml.safe_load((ROOT / "launchpad_configs/my_qadapter_slurm.yaml").read_text())
    assert qadapter["rocket_launch"].startswith("$ILFLOWS_VENV/bin/ilflows worker")
    qadapter |= {
        "rocket_launch": qadapter["rocket_launch"].replace(" --category cpu", ""),
        "ntasks": 2,
        "walltime": "00:30:00",
        "pre_rocket": "export OMP_NUM_THREADS=1",
    }
    (tmp_path / "qadapter.yaml").write_text(yaml.safe_dump(qadapter))
    env = {**slurm_cluster.env, "ILFLOWS_VENV": str(VENV)}
    proc = ilflows(["qlaunch", str(tmp_path / "qadapter.yaml"), "--poll", "2"], tmp_path, timeout=1200, **env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "queue: nothing left to run; 1 batch jobs submitted" in proc.stdout

    # the batch job's own output, once it has ended: the worker ran the whole campaign
    slurm_cluster.wait_jobs(timeout=120)
    outputs = list((tmp_path / "runs/queue").glob("block_*/launcher_*/ilflows-cpu-*.out"))
    assert len(outputs) == 1, slurm_cluster.logs()
    report = json.loads(ilflows(["status", "--json"], tmp_path).stdout)["queue"]
    total = report["jobs"]["total"]
    assert report["jobs"] == {"completed": total, "fizzled": 0, "total": total, "blocked": 0}
    # the node's two tasks each ran jobs: one worker process per task
    assert f"queue: {total}/{total} jobs completed, 0 fizzled (2 workers)" in outputs[0].read_text()
    assert report["iterations"][-1]["trained_on"] > 0
