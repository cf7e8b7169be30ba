"""A campaign's queue and records, on the fake engines: each frame labelled once, nothing run twice,
nothing lost when a worker, a runner or the whole queue goes, and what it exports.

The same two-stage, two-iteration campaign as the real one of ``test_campaign.py``, on the fake
engines of ``fake_engines.py``: what is tested is the queue and the store, in seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_runs import FAKE_ONE_ITERATION, ILFLOWS, ROOT, cli_env, fake_engines_env, ilflows_read
from cli_runs import ilflows as _ilflows

# 2 packed boxes of one pair and their rattled copies, 4 members, 2 walkers; a cold stage of one
# iteration, then a warm one.  The members never agree to 1e-6 eV/Å: every frame is a candidate.
TINY = {
    "name": "tiny",
    "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
    "initial": {"density_factors": [1.0], "boxes_per_density": 2, "rattled_copies": 1},
    "dft": {"engine": "pair-dft"},
    "train": {"engine": "pair-fit", "n_models": 4},
    "explore": {
        "engine": "rattle-walk",
        "n_steps": 200,
        "frame_every": 20,
        "n_walkers": 2,
        "temperature": 300,
        "stages": [
            {"name": "cold", "temperature": 200, "n_steps": 100, "max_iterations": 1},
            {"name": "warm", "start_from": "accurate"},
        ],
    },
    "select": {"trust_lo": 1e-6, "trust_hi": 50.0, "max_candidates": 3},
    "guards": {"max_void": None},
    "loop": {"max_iterations": 2, "accurate_ratio": 0.999},
}
FAKES = fake_engines_env()


@pytest.fixture(scope="module")
def tiny_campaign(tmp_path_factory):
    """Run the campaign once with `ilflows run`; return (home, stdout)."""
    home = tmp_path_factory.mktemp("home")
    spec = home / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    proc = _ilflows(["run", str(spec)], home, **FAKES)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]  # e.g. a FireWorks thread racing the store
    return home, proc.stdout


def _status(home: Path) -> dict:
    return json.loads(ilflows_read(["status", "--json"], home, **FAKES).stdout)["tiny"]


def _query(home: Path, *args: str, **env: str) -> list[dict]:
    proc = ilflows_read(["query", *args, "--json"], home, **{**FAKES, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_each_selected_frame_has_exactly_one_label_linked_to_its_source(tiny_campaign):
    home, _ = tiny_campaign
    from ilflows.settings import IlflowsSettings
    from ilflows.store import connect_jobstore

    store = connect_jobstore(IlflowsSettings(home=home))
    selection = store.query_one({"output.kind": "selection", "output.iteration": 0})["output"]
    explored = _query(home, "labels", "--iteration", "0")
    assert len(explored) == len(selection["selected"])
    assert sorted((lab["frame_id"], lab["deviation_eV_A"]) for lab in explored) == sorted(
        (f"tiny/it0/w{s['walker']}/f{s['frame_index']}", s["deviation"]) for s in selection["selected"]
    )
    # the labelled frame is the very frame of the exploration trajectory it names
    for s in selection["selected"]:
        label = store.query_one(
            {"output.kind": "dft_label", "output.frame_id": f"tiny/it0/w{s['walker']}/f{s['frame_index']}"}
        )
        explo = store.query_one(
            {"output.kind": "exploration", "output.iteration": 0, "output.walker": s["walker"]}, load=True
        )["output"]
        assert label["output"]["frame"]["positions"] == explo["trajectory"]["positions"][s["frame_index"]]
        assert label["output"]["origin"]["md_step"] == explo["trajectory"]["steps"][s["frame_index"]]
        assert explo["deviations"][s["frame_index"]] == s["deviation"]
    docs = store.query({"output.kind": "dft_label"}, properties=["output.frame_hash"])
    prints = [d["output"]["frame_hash"] for d in docs]
    assert len(prints) == len(set(prints)) == len(_query(home, "labels"))  # no frame labelled twice
    # iteration 1 trained on the initial labels plus those of iteration 0, no more, no fewer
    trainings = _query(home, "trainings", "--iteration", "1")
    assert len(trainings) == 4 and {t["seed"] for t in trainings} == {1, 2, 3, 4}
    converged = [lab for lab in _query(home, "labels") if lab["converged"]]
    assert {t["n_frames"] + t["n_held_out"] for t in trainings} == {len(converged)}


def test_rerunning_a_finished_campaign_resumes_with_nothing_to_do(tiny_campaign):
    home, _ = tiny_campaign
    before = _query(home, "labels")
    proc = _ilflows(["run", str(home / "tiny.yaml")], home, timeout=120, **FAKES)
    assert proc.returncode == 0, proc.stderr
    assert "resumed tiny:" in proc.stdout and "jobs done" not in proc.stdout
    assert _query(home, "labels") == before


def test_same_name_with_another_spec_is_refused(tiny_campaign):
    home, _ = tiny_campaign
    changed = home / "changed.yaml"
    changed.write_text(yaml.safe_dump({**TINY, "select": {**TINY["select"], "max_candidates": 5}}))
    proc = _ilflows(["run", str(changed)], home, **FAKES)
    assert proc.returncode == 2
    assert "campaign 'tiny' is already queued from a different spec" in proc.stderr


def test_killed_worker_loses_nothing_and_labels_each_frame_once(tmp_path):
    # the queue is tested, not the engines: fake ones, each label taking 2 s so that the kill lands in one
    spec = tmp_path / "kill.yaml"
    initial = {"density_factors": [1.0], "boxes_per_density": 2, "rattled_copies": 1}
    spec.write_text(yaml.safe_dump({**FAKE_ONE_ITERATION, "name": "kill", "initial": initial}))
    env = {**fake_engines_env(), "FAKE_LABEL_SECONDS": "2"}
    worker = subprocess.Popen(
        [*ILFLOWS, "run", str(spec)],
        env=cli_env(tmp_path, **env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        for line in worker.stdout:  # kill -9 the runner and its workers while the third label runs
            done = re.search(r"\s(\d+)/\d+\s+jobs done", line)
            if done and int(done.group(1)) == 3:
                break
        os.killpg(worker.pid, 9)
    finally:
        worker.wait()
    assert worker.returncode == -9
    done_before = {lab["frame_id"] for lab in _query(tmp_path, "labels", **env)}
    assert len(done_before) == 2  # finished before the kill: kept

    proc = _ilflows(["run", str(spec)], tmp_path, timeout=900, **fake_engines_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "resumed kill:" in proc.stdout
    labels = _query(tmp_path, "labels", **env)
    assert sorted(lab["frame_id"] for lab in labels) == [f"kill/initial/{i}" for i in range(4)]
    status = json.loads(ilflows_read(["status", "--json"], tmp_path, **env).stdout)["kill"]
    assert status["jobs"]["fizzled"] == 0 and status["iterations"][0]["trained_on"] == 4


RERUN_SELECT = """
import json
from ilflows.settings import IlflowsSettings
from ilflows.store import open_queue

queue = open_queue(IlflowsSettings(home=HOME))  # a copy of the campaign's store
lp = queue.__enter__()
from fireworks import FWAction  # after ilflows chose FireWorks' backend
from ilflows.store.launchpad import IlflowsLaunchPad

select = lp.fireworks.find_one({"name": "select it0"})
launch = lp.launches.find_one({"launch_id": select["launches"][-1]})


def run_select_again():
    # as after a worker died between the select job's end and the record of its completion
    lp.fireworks.update_one({"fw_id": select["fw_id"]}, {"$set": {"state": "RUNNING"}})
    lp.launches.update_one({"launch_id": launch["launch_id"]}, {"$set": {"state": "RUNNING"}})
    lp.workflows.update_one({"nodes": select["fw_id"]}, {"$set": {f"fw_states.{select['fw_id']}": "RUNNING"}})
    lp.complete_launch(launch["launch_id"], FWAction.from_dict(launch["action"]))
    return lp.fireworks.count_documents({})


counts = {"before": lp.fireworks.count_documents({}), "guarded": run_select_again()}
labels = [fw["name"] for fw in lp.fireworks.find({"name": {"$regex": "^label it0 "}})]
IlflowsLaunchPad._queued = lambda self, wf: False  # control: FireWorks alone queues them again
counts["unguarded"] = run_select_again()
print(json.dumps({**counts, "labels": labels}))
"""


def test_a_selection_run_twice_queues_no_job_twice(tiny_campaign, tmp_path):
    home = shutil.copytree(tiny_campaign[0], tmp_path / "home")
    script = RERUN_SELECT.replace("HOME", repr(str(home)))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=cli_env(home, **FAKES), capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.splitlines()[-1])
    assert counts["guarded"] == counts["before"] < counts["unguarded"] and counts["labels"]
    assert len(counts["labels"]) == len(set(counts["labels"]))  # each frame labelled by one job


def test_a_lost_queue_is_rebuilt_without_running_any_engine_again(tiny_campaign, tmp_path):
    home = shutil.copytree(tiny_campaign[0], tmp_path / "home")
    before = _query(home, "labels")
    trainings = _query(home, "trainings")  # wall times and errors: a member trained again differs
    iterations = _status(home)["iterations"]  # what each selection chose, and why
    (home / "launchpad.json").unlink()  # the queue is gone; the results store is whole
    # any label, training or exploration would fail (and change a record): none may start
    no_engines = fake_engines_env(fail="dft,train,explore")
    proc = _ilflows(["run", str(home / "tiny.yaml")], home, timeout=900, **no_engines)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(
        r"note: the campaign was not in the queue, but the store held \d+ of its results", proc.stdout
    )
    assert re.search(r"queued and ran tiny: (\d+)/\1 jobs completed, 0 fizzled", proc.stdout)
    assert _query(home, "labels") == before  # the same records, wall times included: none computed again
    assert _query(home, "trainings") == trainings
    assert (
        _status(home)["iterations"] == iterations
    )  # no selection made again: it would take its picks for repeats


def test_export_round_trips_through_dpdata_and_ase(tiny_campaign, tmp_path):
    import ase.io
    import dpdata
    import numpy as np

    home, _ = tiny_campaign
    stored = {lab["frame_id"]: lab for lab in _query(home, "labels") if lab["converged"]}
    proc = ilflows_read(["export", "tiny", "--out", str(tmp_path / "npy"), "--models"], home, **FAKES)
    assert proc.returncode == 0, proc.stderr
    system = dpdata.LabeledSystem(str(tmp_path / "npy/sys000"), fmt="deepmd/npy")
    assert len(system) == len(stored) and system["atom_names"] == ["H", "B", "C", "N", "F"]
    n_atoms = system.get_natoms()
    energies = sorted(lab["energy_per_atom_eV"] * n_atoms for lab in stored.values())
    np.testing.assert_allclose(sorted(system["energies"]), energies, rtol=1e-12)
    models = sorted(p.name for p in (tmp_path / "npy/models").iterdir())
    assert models[:2] == ["it1_m0_pair-fit.json", "it1_m0_pair-fit.pairfit"] and len(models) == 8
    xyz = ["--format", "extxyz", "--stress-unit", "kbar"]
    proc = ilflows_read(["export", "tiny", "--out", str(tmp_path / "xyz"), *xyz], home, **FAKES)
    assert proc.returncode == 0, proc.stderr
    frames = ase.io.read(tmp_path / "xyz/tiny.extxyz", index=":")
    assert sorted(f.info["frame_id"] for f in frames) == sorted(stored)
    for atoms in frames:
        label = stored[atoms.info["frame_id"]]
        assert atoms.get_potential_energy() / len(atoms) == pytest.approx(
            label["energy_per_atom_eV"], rel=1e-12
        )
    # the virial DeePMD trains on is the pressure-sign stress times the volume, both in eV
    first = frames[0]
    kbar_per_ev_a3 = 1602.1766208  # 1 eV/Å^3 = 160.22 GPa = 1602.2 kbar
    np.testing.assert_allclose(first.info["stress_kbar"], -first.get_stress(voigt=False) * kbar_per_ev_a3)
    virial = -first.get_stress(voigt=False) * first.get_volume()
    match = [i for i in range(len(system)) if np.allclose(system["coords"][i], first.positions)]
    np.testing.assert_allclose(system["virials"][match[0]], virial, rtol=1e-9, atol=1e-9)


def test_the_report_says_when_trust_lo_is_below_what_the_committee_resolves(tiny_campaign, tmp_path):
    home, out = tiny_campaign
    assert "note (iteration 0): trust_lo 1e-06 eV/Å is below the committee's deviation" in out
    proc = ilflows_read(["report", "tiny", "--out", str(tmp_path)], home, **FAKES)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "report.html").read_text()
    assert "<li>iteration 0: trust_lo 1e-06 eV/Å is below the committee&#x27;s deviation" in text
    assert "<dt>trust window</dt><dd>1e-06-50 eV/Å, at most 3 labels per iteration</dd>" in text
    assert "cold: 200 K, 100 steps, up to 1 iterations; warm: 300 K, 200 steps, up to 3 iterations" in text


def test_a_member_with_no_label_to_train_on_says_why(tmp_path):
    spec = tmp_path / "nolabel.yaml"
    spec.write_text(yaml.safe_dump({**FAKE_ONE_ITERATION, "name": "nolabel"}))
    _ilflows(["run", str(spec), "--quiet"], tmp_path, **fake_engines_env(fail="dft"))  # no SCF converges
    status = ilflows_read(["status", "nolabel"], tmp_path, **FAKES).stdout
    assert (
        "fizzled  train it0 m0 pair-fit: ValueError: no label to train on: of 2 labels 0 converged, "
        "0 held out (validation.holdout_fraction 0.1), 0 outliers; label more initial frames or lower "
        "validation.holdout_fraction"
    ) in status, status


def test_a_spec_whose_initial_labels_would_all_be_held_out_is_refused(tmp_path):
    from ilflows.select.labels import is_held_out

    spec = tmp_path / "fk.yaml"
    spec.write_text(yaml.safe_dump({**FAKE_ONE_ITERATION, "name": "fk"}))
    assert all(is_held_out(f"fk/initial/{i}", 0.1) for i in range(2))  # both fall in the held-out tenth
    proc = _ilflows(["run", str(spec)], tmp_path, **FAKES)
    assert proc.returncode == 2 and proc.stderr.startswith(
        "ilflows: error: validation.holdout_fraction: all 2 initial labels fall in the held-out 0.1"
    ), proc.stderr
    assert not (tmp_path / "launchpad.json").exists()  # nothing queued
