"""Operations: status names failed jobs and what waits on them; rerun brings them back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_runs import (
    FAKE_ONE_ITERATION,
    ROOT,
    cli_env,
    fake_engines_env,
    ilflows,
    ilflows_read,
    processes_with_env,
)

from ilflows.settings import IlflowsSettings
from ilflows.store import get_jobstore

SPEC = {"name": "ops", **FAKE_ONE_ITERATION}
PEER = ROOT.parent / "shared/peer-dpgen/init_data/ip35"
PEER_IMPORT = {"format": "deepmd-npy", "level_of_theory": "GFN1-xTB (CP2K)", "source": "peer-dpgen init_data"}


def _ilflows(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    return ilflows(args, home, **env)


def test_status_shows_a_failed_job_and_rerun_brings_it_back(tmp_path):
    spec = tmp_path / "ops.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    first = _ilflows(["run", str(spec), "--quiet"], tmp_path, **fake_engines_env(fail="explore"))
    assert first.returncode == 1 and "1 fizzled" in first.stdout

    status = ilflows_read(["status", "ops"], tmp_path, **fake_engines_env())
    assert "  fizzled  explore it0 w0: ilflows.execute.EngineError: fake explorer crashed" in status.stdout
    assert "0 jobs wait on them; `ilflows rerun ops` puts them back in the queue" in status.stdout
    report = json.loads(ilflows_read(["status", "--json"], tmp_path, **fake_engines_env()).stdout)["ops"]
    assert report["jobs"]["fizzled"] == 1 and report["jobs"]["blocked"] == 0  # the select job tolerates it
    assert [row["stop_reason"] for row in report["iterations"]] == ["every exploration failed"]

    again = _ilflows(["rerun", "ops"], tmp_path, **fake_engines_env())
    assert again.returncode == 0 and "1 jobs back in the queue\n  explore it0 w0" in again.stdout
    resumed = _ilflows(["run", str(spec), "--quiet"], tmp_path, **fake_engines_env())  # no failure now
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    report = json.loads(ilflows_read(["status", "--json"], tmp_path, **fake_engines_env()).stdout)["ops"]
    assert report["jobs"]["completed"] == report["jobs"]["total"] and report["fizzled"] == []
    # the selection ran again over the new exploration: one record, replaced, not a second one
    assert [row["stop_reason"][:14] for row in report["iterations"]] == ["max_iterations"]
    store = get_jobstore(IlflowsSettings(home=tmp_path))  # read here: a command line would take seconds
    store.connect()
    assert store.count({"output.kind": "training"}) == 2  # not retrained
    store.close()


def test_rerun_of_an_unknown_campaign_is_one_line(tmp_path):
    proc = _ilflows(["rerun", "nope"], tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr == "ilflows: error: campaign: no campaign named 'nope' in the queue; see ilflows status\n"
    )


def test_a_hanging_engine_is_killed_at_its_limit_and_its_label_counts_as_failed(tmp_path):
    if not PEER.is_dir():
        pytest.skip(f"peer data not found at {PEER}")
    peer = tmp_path / "peer"  # two of the peer's labelled frames (a job each)
    (peer / "set.000").mkdir(parents=True)
    for name in ("type.raw", "type_map.raw"):
        shutil.copy(PEER / name, peer / name)
    for array in (PEER / "set.000").glob("*.npy"):
        np.save(peer / "set.000" / array.name, np.load(array)[:2])
    spec = tmp_path / "hang.yaml"
    # the CP2K label of the one packed box hangs (a stuck SCF, a dead file system) and is killed at
    # the shortest limit; the imported labels are trained on, on fake engines
    initial = {**SPEC["initial"], "boxes_per_density": 1, "imports": [{**PEER_IMPORT, "path": str(peer)}]}
    hanging = {
        **SPEC,
        "name": "hang",
        "initial": initial,
        "dft": {"engine": "cp2k-xtb"},
        "time_limits": {"label": 1},
    }
    spec.write_text(yaml.safe_dump({**hanging, "validation": {"holdout_fraction": 0}}))
    hang = tmp_path / "cp2k"
    hang.write_text("#!/bin/sh\nsleep 60 & sleep 61; wait\n")
    hang.chmod(0o755)
    proc = _ilflows(["run", str(spec), "--quiet"], tmp_path, ILFLOWS_CP2K_CMD=str(hang), **fake_engines_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    labels = json.loads(ilflows_read(["query", "labels", "--json"], tmp_path).stdout)
    failed = [lab for lab in labels if not lab["converged"]]
    assert len(labels) == 3 and len(failed) == 1 and "timed out after 1 s" in failed[0]["error"]
    assert 1 <= failed[0]["wall_time_s"] < 30  # killed at its limit, not after the 60 s sleep
    report = json.loads(ilflows_read(["status", "--json"], tmp_path).stdout)["hang"]
    assert report["jobs"]["fizzled"] == 0 and report["iterations"][0]["failed_labels"] == 1
    assert processes_with_env(f"ILFLOWS_HOME={tmp_path}") == []  # none left, the sleeps included


def test_readers_refuse_a_missing_store_and_unknown_campaigns_in_one_line(tmp_path):
    for args in (["status"], ["query", "labels"], ["report", "x"]):
        proc = _ilflows(args, tmp_path / "nohome")
        assert proc.returncode == 2 and proc.stderr.startswith(
            f"ilflows: error: no ilflows store in {tmp_path / 'nohome'}"
        )
        assert len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "nohome").exists()  # a reader creates nothing
    (tmp_path / "jobstore").mkdir()  # an empty store
    for args in (["status", "nosuch"], ["query", "labels", "--campaign", "nosuch"]):
        proc = _ilflows(args, tmp_path)
        assert proc.returncode == 2
        message = "ilflows: error: campaign: no campaign named 'nosuch' in the store or the queue"
        assert proc.stderr == f"{message} (known: none yet)\n"
    empty = ilflows_read(["query", "trainings", "--csv"], tmp_path)
    assert empty.returncode == 0
    assert empty.stdout.splitlines()[0].startswith("iteration,member,seed,engine,n_frames,n_held_out")


def test_a_closed_pipe_ends_a_query_quietly(tmp_path):
    from ilflows.store.queries import natural

    assert sorted(["c/it0/w0/f10", "c/it0/w0/f2", "c/it0/w1/f1"], key=natural) == [
        "c/it0/w0/f2",
        "c/it0/w0/f10",
        "c/it0/w1/f1",
    ]
    (tmp_path / "jobstore").mkdir()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write fails
    proc = subprocess.run(
        [sys.executable, "-m", "ilflows.cli", "query", "labels", "--csv"],
        env=cli_env(tmp_path),
        cwd=ROOT,
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write_end)
    err = proc.stderr
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
