"""A real campaign: CP2K-xTB labels, DeePMD members and a LAMMPS walker for two iterations in two
stages, then production MD with the last committee and its analysis; and bad specs refused.

What the queue and the store do with a campaign (kills, reruns, a lost queue, exports) is tested
on the fake engines in ``test_campaign_queue.py``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from browser import render
from cli_runs import ilflows as _ilflows
from cli_runs import ilflows_read

pytest_plugins = ["browser"]

# 1 pair, 4 initial xTB labels, 2 DeePMD models of 60 steps, 1 walker of 200 NVT steps.
# The half-trained ensemble disagrees a lot, so the window is widened to keep candidates.
PRODUCTION = [
    {
        "name": "npt",
        "ensemble": "npt",
        "temperature": 300,
        "n_steps": 200,
        "frame_every": 10,
        "density_blocks": 4,
        "rdf_pairs": [["B", "N"], ["H", "H"]],
        "rdf_max": 5.0,
        "model": 1,
    },
    {
        "name": "nvt",
        "ensemble": "nvt",
        "temperature": 300,
        "n_steps": 200,
        "frame_every": 10,
        "diffusion_window": [0.01, 0.06],
        "viscosity": 0.05,
    },
    {
        "name": "vacuum",
        "ensemble": "nvt",
        "molecule": "PYR14",
        "n_steps": 100,
        "frame_every": 10,
        "vacuum_box": 25,
    },
]


TINY = {
    "name": "tiny",
    "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
    "initial": {"density_factors": [1.0], "boxes_per_density": 2, "rattled_copies": 1},
    "train": {
        "preset": "tiny",
        "n_models": 2,
        "overrides": {
            "model": {"descriptor": {"type_one_side": True}},
            "training": {"numb_steps": 60, "disp_freq": 20, "save_freq": 60},
        },
    },
    "explore": {
        "n_steps": 200,
        "frame_every": 20,
        "n_walkers": 1,
        "temperature": 300,
        "stages": [  # cold and short first, then the section's own conditions
            {"name": "cold", "temperature": 200, "n_steps": 100, "max_iterations": 1},
            {"name": "warm", "start_from": "accurate"},
        ],
    },
    "select": {"trust_lo": 0.01, "trust_hi": 50.0, "max_candidates": 2},
    "guards": {"max_void": None},
    # tiny/initial/0 is held out (its id's hash reads 0.34): the held-out parity and calibration
    "validation": {"holdout_fraction": 0.35},
    "loop": {"max_iterations": 2, "accurate_ratio": 0.999, "production_unconverged": True},
    "production": PRODUCTION,
}


@pytest.fixture(scope="module")
def tiny_campaign(tmp_path_factory):
    """Run the tiny campaign once with `ilflows run`; return (home, stdout, its JobStore)."""
    home = tmp_path_factory.mktemp("home")
    spec = home / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    proc = _ilflows(["run", str(spec)], home, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]  # e.g. a FireWorks thread racing the store
    from ilflows.settings import IlflowsSettings
    from ilflows.store import connect_jobstore

    return home, proc.stdout, connect_jobstore(IlflowsSettings(home=home))


def _query(home: Path, *args: str, **env: str) -> list[dict]:
    proc = ilflows_read(["query", *args, "--json"], home, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _record(store, kind: str, run: str) -> dict:
    return store.query_one({"output.kind": kind, "output.run": run}, load=True)["output"]


@pytest.mark.slow
def test_campaign_runs_two_iterations_and_prints_the_table(tiny_campaign):
    home, out, _ = tiny_campaign
    assert "jobs done" in out  # progress lines
    table = out[out.index("per-iteration results, exploration") :].splitlines()
    assert table[1].split()[:4] == ["iteration", "stage", "frames", "accurate"]
    assert [row.split()[0] for row in table[2:4]] == ["0", "1"]
    errors = out[out.index("errors of the ensemble mean on every label") :].splitlines()
    assert errors[1].split()[:5] == [
        "iteration",
        "trained_on",
        "held_out",
        "failed_labels",
        "train_rmse_f_eV_A",
    ]
    status = json.loads(ilflows_read(["status", "--json"], home).stdout)["tiny"]
    assert status["jobs"]["completed"] == status["jobs"]["total"] and status["jobs"]["fizzled"] == 0
    it0, it1 = status["iterations"]
    assert (it0["trained_on"], it0["held_out"]) == (3, 1) and 1 <= it0["selected"] <= 2
    assert it1["trained_on"] + it1["held_out"] == 4 + it0["selected"] - it1["failed_labels"]
    scores = _query(home, "validation")  # the ensemble mean on every label it trained on, each iteration
    for it in (it0, it1):
        train = [
            r
            for r in scores
            if (r["iteration"], r["label_set"], r["model"], r["subset"])
            == (it["iteration"], "training", "mean", "all")
        ]
        assert (
            train[0]["n_frames"] == it["trained_on"]
            and it["train_rmse_f_eV_A"] == train[0]["force_rmse_eV_A"]
        )
        assert it["devi_floor_eV_A"] > 0 and it["devi_median_eV_A"] > 0
    assert it1["stop_reason"].startswith("max_iterations")
    assert (it0["stage"], it1["stage"]) == ("cold", "warm")  # stage 0 ran its one iteration
    explored = _query(home, "explorations")
    assert {(e["iteration"], e["temperature_K"]) for e in explored} == {(0, 200.0), (1, 300.0)}


@pytest.mark.slow
def test_query_shows_dft_training_and_md_records(tiny_campaign):
    home, _, _ = tiny_campaign
    initial = _query(home, "labels", "--iteration", "-1")
    assert len(initial) == 4 and all(lab["engine"] == "cp2k-xtb" for lab in initial)
    assert all(lab["energy_per_atom_eV"] < -30 for lab in initial if lab["converged"])
    md = _query(home, "explorations")
    assert [(m["iteration"], m["walker"], m["n_frames"]) for m in md] == [
        (0, 0, 6),  # the cold stage: 100 steps
        (1, 0, 11),
    ]
    frames = _query(home, "frames", "--min", "0.01", "--max", "50")
    assert frames and all(0.01 <= f["deviation_eV_A"] < 50 for f in frames)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"select": {"trust_lo": 2.0, "trust_hi": 1.5}},
            "select: trust_lo (2.0) must be below trust_hi",
        ),
        (
            {"system": {"ions": {"XYZ": 1, "BF4": 1}, "density": 0.22}},
            "system.ions: unknown ion 'XYZ'",
        ),
        ({"explore": {"n_step": 10}}, "explore.n_step: not a field of this section; remove it or correct"),
        (
            {"train": {"n_models": 1}},
            "train: a committee needs at least 2 models in all, got 1; raise train.n_models",
        ),
    ],
)
def test_bad_spec_is_refused_in_one_line_with_nothing_queued(tmp_path, change, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**TINY, **change}))
    proc = _ilflows(["run", str(spec)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    queue = tmp_path / "launchpad.json"
    assert not queue.exists() or json.loads(queue.read_text()).get("ilflows", {}).get("fireworks") is None


@pytest.mark.slow
def test_npt_run_gives_density_with_its_interval_and_rdfs(tiny_campaign):
    _, _, store = tiny_campaign
    props, md = _record(store, "properties", "npt"), _record(store, "production", "npt")
    assert md["ensemble"] == "npt" and len(md["trajectory"]["steps"]) == 21
    cells = np.asarray(md["trajectory"]["cells"])[4:]  # 20 % of 21 frames left out
    mass = 229.07  # PYR14+ BF4-, g/mol
    expected = mass / 6.02214076e23 / (np.abs(np.linalg.det(cells)) * 1e-24)
    assert props["n_frames"] == 17 and props["density_series"] == pytest.approx(expected, rel=1e-3)
    blocks = expected[1:].reshape(4, 4).mean(axis=1)  # 4 blocks of 4; the odd first frame is left out
    assert props["density"] == pytest.approx(blocks.mean(), rel=1e-3)
    assert props["density_ci"] == pytest.approx(3.182446 * blocks.std(ddof=1) / 2, rel=1e-2)  # t(0.975, 3)
    assert [tuple(r["pair"]) for r in props["rdfs"]] == [("B", "N"), ("H", "H")]
    assert max(props["rdfs"][0]["r"]) < 5.0 and len(props["rdfs"][0]["g"]) == 100
    # one B and one N in the box: g(r) is non-zero exactly in the bins of their distances
    species = md["trajectory"]["species"]
    positions = np.asarray(md["trajectory"]["positions"])[4:]
    b, n = species.index("B"), species.index("N")
    frac = np.einsum("fi,fij->fj", positions[:, n] - positions[:, b], np.linalg.inv(cells))
    dist = np.linalg.norm(np.einsum("fj,fji->fi", frac - np.round(frac), cells), axis=1)
    assert {int(d / 0.05) for d in dist if d < 5.0} == set(np.flatnonzero(props["rdfs"][0]["g"]))
    hh = np.asarray(props["rdfs"][1]["g"])
    assert np.isfinite(hh).all() and hh.max() > 1  # a like pair: self pairs left out, never 0/0
    assert props["pyr14_butyl"] and sum(props["pyr14_butyl"].values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_production_is_linked_to_the_models_that_ran_it(tiny_campaign):
    _, _, store = tiny_campaign
    trainings = {
        d["output"]["member"]: d["output"]["model_file"]["sha256"]
        for d in store.query({"output.kind": "training", "output.iteration": 1}, load=True)
    }  # the last committee
    md = _record(store, "production", "npt")
    assert md["members"] == [1, 0] and md["model_sha256"] == [trainings[1], trainings[0]]  # member 1 drives
    props = _record(store, "properties", "npt")
    assert props["model_sha256"] == md["model_sha256"] and props["iteration"] == 1
    assert props["max_deviation"] == pytest.approx(max(md["deviations"]))


@pytest.mark.slow
def test_nvt_run_gives_diffusion_per_ion(tiny_campaign):
    _, _, store = tiny_campaign
    props, md = _record(store, "properties", "nvt"), _record(store, "production", "nvt")
    assert [d["ion"] for d in props["diffusion"]] == ["BF4", "PYR14"]
    for d in props["diffusion"]:
        lags, msd = np.asarray(d["lags"]), np.asarray(d["msd"])
        assert msd[0] == 0 and (msd[1:] > 0).all()  # the slope may have either sign in 200 steps
        inside = (lags >= 0.01) & (lags <= 0.06)
        slope = np.polyfit(lags[inside], msd[inside], 1)[0]
        assert d["d"] == pytest.approx(slope / 6 * 1e-8)
        edge = np.cbrt(np.abs(np.linalg.det(np.asarray(md["trajectory"]["cells"])[4:])).mean())
        kt_xi = 1.380649e-23 * 300 * 2.837297
        assert d["d_corrected"] - d["d"] == pytest.approx(kt_xi / (6 * np.pi * 0.05 * edge * 1e-10))
    assert props["density"] is None  # NVT


@pytest.mark.slow
def test_single_ion_in_vacuum_and_the_properties_query(tiny_campaign):
    home, _, store = tiny_campaign
    md = _record(store, "production", "vacuum")
    assert len(md["trajectory"]["species"]) == 30 and np.diag(md["trajectory"]["cells"][0]) == pytest.approx(
        [25] * 3
    )
    props = _record(store, "properties", "vacuum")
    assert sum(props["pyr14_butyl"].values()) == pytest.approx(1.0) and not props["tfsi_conformers"]
    r1, r2 = np.asarray(props["pyr14_distances"]).T  # one cation, 9 analysed frames
    assert len(r2) == props["n_frames"] == 9 and (r1 > 1.0).all() and (r2 > 2.0).all()
    anti = np.mean(r2 >= 6.0)
    assert props["pyr14_butyl"].get("anti", 0.0) == pytest.approx(anti)
    # the per-molecule series sit in the data store, not in the job document
    doc = store.query_one({"output.kind": "properties", "output.run": "vacuum"}, load=False)["output"]
    assert "blob_uuid" in doc["pyr14_distances"]

    rows = json.loads(ilflows_read(["query", "properties", "--json"], home).stdout)
    assert [r["run"] for r in rows] == ["npt", "nvt", "vacuum"]
    table = list(csv.DictReader(io.StringIO(ilflows_read(["query", "properties", "--csv"], home).stdout)))
    assert float(table[0]["density"]) == pytest.approx(rows[0]["density"])
    assert float(table[1]["D_PYR14_m2_s"]) == pytest.approx(rows[1]["D_PYR14_m2_s"])


@pytest.mark.slow
def test_report_renders_in_a_browser_with_every_figure(tiny_campaign, chromium, tmp_path):
    home, _, _ = tiny_campaign
    out = tmp_path / "report"
    assert ilflows_read(["report", "tiny", "--out", str(out)], home).returncode == 0
    page = render(out / "report.html", screenshot=tmp_path / "page.png", width=1400)
    assert not page.problems, page  # no console error, exception or failed request
    assert page.overflow <= 0, page  # no column off-screen at 1400 px
    assert page.title == "ilflows campaign tiny"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "calibration.png",
        "deviations.png",
        "learning_curves.png",
        "parity_it0.png",
        "parity_it1.png",
        "populations.png",
        "properties.png",
        "rdf.png",
        "shapes.png",
    ]
    assert len(page.images) == len(pngs) and all(loaded for _, loaded in page.images)
    assert (tmp_path / "page.png").stat().st_size > 10_000
