"""Validation: errors per member and for the ensemble mean, split EQ/nEQ, from real MACE members."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_runs import FAKE_ONE_ITERATION, fake_engines_env, ilflows, ilflows_read
from jobflow import JobStore, run_locally
from mace_models import write_committee
from maggma.stores import MemoryStore

from ilflows.analysis.validation import error_metrics, parity, predict
from ilflows.loop.steps import score_models
from ilflows.schemas import DFTLabel, ModelFile, Parity, Validation
from ilflows.select.labels import is_held_out

SMALL = {"hidden_irreps": "8x0e+8x1o", "r_max": 5.0, "max_ell": 2, "correlation": 2}


def test_error_metrics_by_hand():
    data = Parity(
        frame_ids=["a", "b"],
        equilibrated=[True, False],
        n_atoms=[2, 1],
        models=["m0", "mean"],
        energy_ref=[-1.0, -2.0],
        energy_pred=[[-0.9, -2.3], [-1.0, -2.0]],
        force_ref=[0, 0, 0, 1, 1, 1, 2, 2, 2],
        force_pred=[[0, 0, 0.3, 1, 1, 1, 2, 2, 1.6], [0, 0, 0, 1, 1, 1, 2, 2, 2]],
    )
    got = {(m.model, m.subset): m for m in error_metrics(data)}
    assert set(got) == {(model, subset) for model in ("m0", "mean") for subset in ("EQ", "nEQ", "all")}
    eq, neq, both = got["m0", "EQ"], got["m0", "nEQ"], got["m0", "all"]
    assert (eq.n_frames, neq.n_frames, both.n_frames) == (1, 1, 2)
    assert eq.energy_rmse == pytest.approx(0.1) and neq.energy_mae == pytest.approx(0.3)
    assert both.energy_rmse == pytest.approx(np.sqrt((0.01 + 0.09) / 2))
    assert eq.force_rmse == pytest.approx(np.sqrt(0.09 / 6)) and eq.force_mae == pytest.approx(0.3 / 6)
    assert neq.force_rmse == pytest.approx(np.sqrt(0.16 / 3))
    assert both.force_mae == pytest.approx(0.7 / 9)
    assert got["mean", "all"].energy_rmse == 0.0 and got["mean", "all"].force_rmse == 0.0


@pytest.fixture(scope="module")
def committee(type_map, tmp_path_factory):
    return write_committee(tmp_path_factory.mktemp("mace"), type_map, 3, seed=3, **SMALL)


def _as_validation(labels: list[DFTLabel], energies: np.ndarray, forces: list[np.ndarray]) -> list[DFTLabel]:
    """Held-out labels whose reference is member 0's own prediction, every other frame EQ."""
    out = []
    for i, label in enumerate(labels):
        origin = label.origin.model_copy(update={"stage": "validation", "equilibrated": i % 2 == 0})
        out.append(
            label.model_copy(
                update={
                    "campaign": "val",
                    "frame_id": origin.frame_id,
                    "origin": origin,
                    "energy": float(energies[0, i]),
                    "forces": forces[i][0].tolist(),
                }
            )
        )
    return out


def test_members_are_scored_against_their_own_predictions(committee, peer_labels):
    from mace.calculators import MACECalculator

    labels = peer_labels[:4]
    energies, forces = predict(committee, labels)
    separate = MACECalculator(model_paths=str(committee[1]), device="cpu", default_dtype="float64")
    atoms = labels[2].frame.to_ase()
    assert energies[1, 2] == pytest.approx(separate.get_potential_energy(atoms), abs=1e-8)
    assert forces[2][1] == pytest.approx(separate.get_forces(atoms), abs=1e-8)

    data = parity(_as_validation(labels, energies, forces), [0, 1, 2], energies, forces)
    got = {(m.model, m.subset): m for m in error_metrics(data)}
    assert got["m0", "all"].energy_rmse < 1e-12 and got["m0", "all"].force_rmse < 1e-12
    n_atoms = labels[0].frame.n_atoms
    de = (energies[1] - energies[0]) / n_atoms
    assert got["m1", "all"].energy_mae == pytest.approx(np.mean(np.abs(de)))
    assert got["m1", "EQ"].energy_rmse == pytest.approx(np.sqrt(np.mean(de[[0, 2]] ** 2)))
    mean_error = np.concatenate([(f.mean(axis=0) - f[0]).ravel() for f in forces])
    assert got["mean", "all"].force_rmse == pytest.approx(np.sqrt(np.mean(mean_error**2)))


def test_scoring_keeps_to_the_threads_setting(committee, peer_labels, monkeypatch):
    """Scored beside a walker, a validation on every core took three times as long."""
    import torch

    from ilflows.explore.committee import CommitteeCalculator

    seen, calculate = [], CommitteeCalculator.calculate

    def counted(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return calculate(self, *args, **kwargs)

    monkeypatch.setattr(CommitteeCalculator, "calculate", counted)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        predict(committee, peer_labels[:2])
        assert seen == [1, 1] and torch.get_num_threads() == 2  # the threads setting (1), then back
    finally:
        torch.set_num_threads(before)


def test_scoring_reads_each_label_set_and_skips_a_crashed_member(committee, peer_labels, tmp_path):
    labels = peer_labels[:4]
    energies, forces = predict(committee, labels)
    validation = _as_validation(labels, energies, forces)
    validation[3] = validation[3].model_copy(update={"converged": False, "energy": None, "forces": None})
    # the campaign's own labels, referenced to member 0 too: frame ids decide which are held out
    own_ids = [f"val/initial/{i}" for i in range(12)]
    held = [i for i, frame_id in enumerate(own_ids) if is_held_out(frame_id, 0.25)]
    assert 0 < len(held) < 12  # both sides of the split are filled
    frames = [peer_labels[i % 20] for i in range(12)]
    own_e, own_f = predict(committee, frames)
    own = [
        lab.model_copy(
            update={
                "campaign": "val",
                "frame_id": frame_id,
                "energy": float(own_e[0, i]),
                "forces": own_f[i][0].tolist(),
            }
        )
        for i, (lab, frame_id) in enumerate(zip(frames, own_ids, strict=True))
    ]
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    store.connect()
    for k, label in enumerate([*validation, *own]):
        store.update({"uuid": f"label-{k}", "index": 1, "output": label.model_dump()}, key=["uuid", "index"])
    models = [ModelFile.from_path(committee[0]), None, ModelFile.from_path(committee[2])]

    job = score_models("val", 0, models, holdout_fraction=0.25, outlier_k=None)
    run_locally(job, store=store, root_dir=tmp_path, ensure_success=True)
    result = Validation.model_validate(store.query_one({"uuid": job.uuid}, load=True)["output"])
    assert result.members == [0, 2] and result.n_failed_labels == 1
    assert result.parity.models == ["m0", "m2", "mean"] and len(result.parity.frame_ids) == 3
    assert result.held_out_parity.frame_ids == [own_ids[i] for i in held]
    got = {(m.label_set, m.model, m.subset): m for m in result.metrics}
    assert (
        got["validation", "m0", "all"].force_rmse < 1e-12 and got["validation", "m2", "all"].force_rmse > 1e-3
    )
    assert got["validation", "m0", "EQ"].n_frames == 2 and got["validation", "m0", "nEQ"].n_frames == 1
    assert got["training", "m0", "all"].n_frames == 12 - len(held)
    assert got["held_out", "mean", "all"].n_frames == len(held)
    # calibration, by hand: the members' spread, and the mean's distance from member 0 (the reference)
    c = result.calibration
    for i, frame_id in zip(held, c.frame_ids, strict=True):
        f = own_f[i][[0, 2]]
        spread = np.sqrt(((f - f.mean(axis=0)) ** 2).sum(axis=2).mean(axis=0)).max()
        error = np.linalg.norm(f.mean(axis=0) - f[0], axis=1).max()
        k = c.frame_ids.index(frame_id)
        assert c.deviation[k] == pytest.approx(spread, rel=1e-9) and c.error[k] == pytest.approx(
            error, rel=1e-9
        )
    assert len(result.training_deviation) == 12 - len(held) and min(result.training_deviation) > 0


@pytest.fixture(scope="module")
def validated_campaign(tmp_path_factory) -> Path:
    """Run a one-iteration campaign with two held-out validation boxes; return its home.

    On the fake engines: the scoring is tested, and by hand above on real models.
    """
    home = tmp_path_factory.mktemp("val")
    spec = home / "val.yaml"
    validation = {"density_factors": [1.0], "boxes_per_density": 2}
    spec.write_text(yaml.safe_dump({"name": "val", **FAKE_ONE_ITERATION, "validation": validation}))
    proc = ilflows(["run", str(spec), "--quiet"], home, **fake_engines_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return home


def test_a_campaign_validates_each_iteration_on_its_held_out_boxes(validated_campaign):
    tmp_path = validated_campaign

    rows = json.loads(ilflows_read(["query", "validation", "--json"], tmp_path).stdout)
    assert {r["label_set"] for r in rows} >= {"training", "validation"}
    rows = [r for r in rows if r["label_set"] == "validation"]
    models = {(r["model"], r["subset"]) for r in rows}
    assert models == {(m, s) for m in ("m0", "m1", "mean") for s in ("nEQ", "all")}  # packed boxes: nEQ
    assert all(r["n_frames"] == 2 and r["iteration"] == 0 for r in rows)
    assert all(r["energy_rmse_meV_atom"] > 0 and r["force_rmse_eV_A"] > 0 for r in rows)
    mean = next(r for r in rows if (r["model"], r["subset"]) == ("mean", "all"))
    table = json.loads(ilflows_read(["status", "--json"], tmp_path).stdout)["val"]["iterations"]
    assert table[0]["val_rmse_f_eV_A"] == pytest.approx(mean["force_rmse_eV_A"])
    assert table[0]["trained_on"] + table[0]["held_out"] == 2  # the validation labels were not trained on


def test_report_page_shows_the_table_and_every_figure(validated_campaign, tmp_path):
    proc = ilflows_read(["report", "val", "--out", str(tmp_path / "report")], validated_campaign)
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "report/report.html"
    assert proc.stdout.strip() == f"campaign val: report written to {page}"
    text = page.read_text()
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs == ["calibration.png", "deviations.png", "learning_curves.png", "parity_it0.png"]
    assert text.count('<img src="data:image/png;base64,') == 4  # the page alone carries its figures
    assert "<th>val_<wbr>rmse_<wbr>f_<wbr>eV_<wbr>A</th>" in text
    assert text.count("<tr><td>") == 2  # one iteration, in the exploration and the error tables
    missing = ilflows_read(["report", "nosuch"], validated_campaign)
    assert missing.returncode == 2 and "no records of 'nosuch'" in missing.stderr
