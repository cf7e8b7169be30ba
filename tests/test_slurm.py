"""A real queue: ``ilflows qlaunch`` submits a worker of a campaign to a one-node SLURM cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_runs import (
    FAKE_ONE_ITERATION,
    ROOT,
    cli_env,
    fake_engines_env,
    ilflows,
    ilflows_read,
    left_after,
)

pytest_plugins = ["slurm_cluster"]

VENV = Path(sys.executable).parent.parent


def test_qlaunch_runs_a_campaign_through_slurm(slurm_cluster, tmp_path):
    spec = tmp_path / "queue.yaml"
    spec.write_text(yaml.safe_dump({"name": "queue", **FAKE_ONE_ITERATION}))  # the queue is tested
    assert ilflows(["submit", str(spec)], tmp_path, **fake_engines_env()).returncode == 0

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
    env = {**slurm_cluster.env, "ILFLOWS_VENV": str(VENV), **fake_engines_env()}  # sbatch passes it on
    proc = ilflows(["qlaunch", str(tmp_path / "qadapter.yaml"), "--poll", "2"], tmp_path, timeout=1200, **env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "queue: nothing left to run; 1 batch jobs submitted" in proc.stdout

    # the batch job's own output, once it has ended: the worker ran the whole campaign
    slurm_cluster.wait_jobs(timeout=120)
    outputs = list((tmp_path / "runs/queue").glob("block_*/launcher_*/ilflows-cpu-*.out"))
    assert len(outputs) == 1, slurm_cluster.logs()
    report = json.loads(ilflows_read(["status", "--json"], tmp_path, **fake_engines_env()).stdout)["queue"]
    total = report["jobs"]["total"]
    assert report["jobs"] == {"completed": total, "fizzled": 0, "total": total, "blocked": 0}
    # the node's two tasks each ran jobs: one worker process per task
    assert f"queue: {total}/{total} jobs completed, 0 fizzled (2 workers)" in outputs[0].read_text()
    assert report["iterations"][-1]["trained_on"] > 0


@pytest.mark.slow
def test_a_worker_whose_walltime_runs_out_puts_its_job_back(slurm_cluster, tmp_path):
    """SLURM's SIGTERM at the time limit (SIGKILL KillWait = 5 s later) is a stop, not a failure."""
    toys = {"PYTHONPATH": str(ROOT / "tests"), "TOY_LOG": str(tmp_path / "log")}
    # a 5-s nap, then a 100-s one: SLURM checks limits every 30 s (a constant of slurmctld, not a
    # setting), so a 1-min batch job gets its SIGTERM 60-90 s in, while the second nap runs; rerun,
    # the second nap takes 1 s, not another 100
    queue = "from toy_jobs import queue_chain; queue_chain(5.0, then=100.0, rerun=1.0)"
    subprocess.run([sys.executable, "-c", queue], env=cli_env(tmp_path, **toys), check=True, cwd=ROOT)
    qadapter = yaml.safe_load((ROOT / "launchpad_configs/my_qadapter_slurm.yaml").read_text())
    exports = " ".join(f"{key}={value}" for key, value in toys.items())
    qadapter |= {
        "rocket_launch": qadapter["rocket_launch"].replace(" --category cpu", ""),
        "ntasks": 1,
        "walltime": "00:01:00",
        "pre_rocket": f"export OMP_NUM_THREADS=1 {exports}",
    }
    (tmp_path / "qadapter.yaml").write_text(yaml.safe_dump(qadapter))
    env = {**slurm_cluster.env, "ILFLOWS_VENV": str(VENV)}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "ilflows.cli", "qlaunch", str(tmp_path / "qadapter.yaml"), "--poll", "1"],
        env=cli_env(tmp_path, **env, **toys),  # FireWorks' queue launcher reads the toy jobs too
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:  # one batch job only: a second would rerun the nap and finish the campaign before the checks below
        deadline = time.time() + 60
        while not slurm_cluster.jobs() and launcher.poll() is None and time.time() < deadline:
            time.sleep(0.2)
    finally:
        launcher.terminate()
        out, err = launcher.communicate(timeout=30)
    assert launcher.returncode == -15, out[-2000:] + err[-2000:]  # stopped here, not ended by itself
    slurm_cluster.wait_jobs(timeout=180)

    outputs = list((tmp_path / "runs/queue").glob("block_*/launcher_*/ilflows-*.out"))
    assert len(outputs) == 1, slurm_cluster.logs()
    deadline = time.time() + 30  # the worker may still be saying its last lines as the job leaves squeue
    while "queue: " not in (said := outputs[0].read_text()) and time.time() < deadline:
        time.sleep(0.2)
    assert "stopped by SIGTERM: 1 interrupted jobs are back in the queue, ready (nap)" in said, said[-2000:]
    report = json.loads(ilflows_read(["status", "--json"], tmp_path).stdout)["chain"]
    assert report["jobs"] == {"completed": 1, "fizzled": 0, "total": 2, "blocked": 0}
    # the worker exits a moment after its last line; the nap it stopped had 100 s left
    assert left_after(f"TOY_LOG={toys['TOY_LOG']}", 10.0) == []  # the nap's engine went with its worker
    proc = ilflows(["worker"], tmp_path, timeout=300, **toys)  # the next worker finishes the campaign
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = (tmp_path / "log").read_text().split()
    assert runs[::2] == ["0", "0"]  # each nap finished once
    (starts,) = tmp_path.glob("starts-*")
    assert len(starts.read_text().split()) == 2  # the second nap: cut short by SIGTERM, then run again
