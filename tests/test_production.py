"""Production runs after the loop: MD with the final committee, then properties linked to the models."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import yaml
from browser import render
from cli_runs import ONE_ITERATION, ilflows

pytest_plugins = ["browser"]

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


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    home = tmp_path_factory.mktemp("prod")
    spec = home / "prod.yaml"
    loop = {**ONE_ITERATION["loop"], "production_unconverged": True}  # one iteration never converges
    spec.write_text(yaml.safe_dump({"name": "prod", **ONE_ITERATION, "loop": loop, "production": PRODUCTION}))
    proc = ilflows(["run", str(spec), "--quiet"], home)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from ilflows.settings import IlflowsSettings
    from ilflows.store import connect_jobstore

    return home, connect_jobstore(IlflowsSettings(home=home))


def _record(store, kind: str, run: str) -> dict:
    return store.query_one({"output.kind": kind, "output.run": run}, load=True)["output"]


@pytest.mark.slow
def test_npt_run_gives_density_with_its_interval_and_rdfs(produced):
    _, store = produced
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
def test_production_is_linked_to_the_models_that_ran_it(produced):
    _, store = produced
    trainings = {
        d["output"]["member"]: d["output"]["model_file"]["sha256"]
        for d in store.query({"output.kind": "training", "output.iteration": 0}, load=True)
    }
    md = _record(store, "production", "npt")
    assert md["members"] == [1, 0] and md["model_sha256"] == [trainings[1], trainings[0]]  # member 1 drives
    props = _record(store, "properties", "npt")
    assert props["model_sha256"] == md["model_sha256"] and props["iteration"] == 0
    assert props["max_deviation"] == pytest.approx(max(md["deviations"]))


@pytest.mark.slow
def test_nvt_run_gives_diffusion_per_ion(produced):
    _, store = produced
    props, md = _record(store, "properties", "nvt"), _record(store, "production", "nvt")
    assert [d["ion"] for d in props["diffusion"]] == ["BF4", "PYR14"]
    for d in props["diffusion"]:
        lags, msd = np.asarray(d["lags"]), np.asarray(d["msd"])
        assert msd[0] == 0 and d["d"] > 0
        inside = (lags >= 0.01) & (lags <= 0.06)
        slope = np.polyfit(lags[inside], msd[inside], 1)[0]
        assert d["d"] == pytest.approx(slope / 6 * 1e-8)
        edge = np.cbrt(np.abs(np.linalg.det(np.asarray(md["trajectory"]["cells"])[4:])).mean())
        kt_xi = 1.380649e-23 * 300 * 2.837297
        assert d["d_corrected"] - d["d"] == pytest.approx(kt_xi / (6 * np.pi * 0.05 * edge * 1e-10))
    assert props["density"] is None  # NVT


@pytest.mark.slow
def test_single_ion_in_vacuum_and_the_properties_query(produced):
    home, store = produced
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

    rows = json.loads(ilflows(["query", "properties", "--json"], home).stdout)
    assert [r["run"] for r in rows] == ["npt", "nvt", "vacuum"]
    table = list(csv.DictReader(io.StringIO(ilflows(["query", "properties", "--csv"], home).stdout)))
    assert float(table[0]["density"]) == pytest.approx(rows[0]["density"])
    assert float(table[1]["D_PYR14_m2_s"]) == pytest.approx(rows[1]["D_PYR14_m2_s"])


def test_bad_production_entries_are_refused_before_queueing(tmp_path):
    bad = [
        ({"name": "x", "molecule": "TFSI", "ensemble": "nvt"}, "production.0.molecule: 'TFSI' is not an ion"),
        ({"name": "x", "model": 2}, "production.0.model: 2 but the committee has 2 members"),
        ({"name": "x", "rdf_pairs": [["Li", "O"]]}, "production.0.rdf_pairs: ['Li', 'O'] names elements"),
        (
            {"name": "x", "diffusion_window": [0.5, 0.1], "ensemble": "nvt"},
            "diffusion_window: [0.5, 0.1] must be",
        ),
        ({"name": "x", "diffusion_window": [0.1, 0.5]}, "diffusion_window: diffusion is measured in NVT"),
    ]
    for entry, message in bad:
        spec = tmp_path / "bad.yaml"
        spec.write_text(yaml.safe_dump({"name": "bad", **ONE_ITERATION, "production": [entry]}))
        proc = ilflows(["check", str(spec)], tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_report_renders_in_a_browser_with_every_figure(produced, chromium, tmp_path):
    home, _ = produced
    out = tmp_path / "report"
    assert ilflows(["report", "prod", "--out", str(out)], home).returncode == 0
    page = render(out / "report.html", screenshot=tmp_path / "page.png", width=1400)
    assert not page.problems, page  # no console error, exception or failed request
    assert page.overflow <= 0, page  # no column off-screen at 1400 px
    assert page.title == "ilflows campaign prod"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "calibration.png",  # prod/initial/1 is held out
        "deviations.png",
        "learning_curves.png",
        "parity_it0.png",
        "populations.png",
        "properties.png",
        "rdf.png",
        "shapes.png",
    ]
    assert len(page.images) == len(pngs) and all(loaded for _, loaded in page.images)
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_single_tfsi_in_vacuum_with_a_mace_committee_gives_conformer_populations(tmp_path):
    from mace_models import write_committee

    from ilflows.analysis.properties import liquid_properties
    from ilflows.explore import EXPLORERS, get_explorer
    from ilflows.loop.production import run_molecules, start_box
    from ilflows.schemas import ModelFile, Production
    from ilflows.schemas.campaign import CampaignSpec

    run = {"name": "tfsi", "molecule": "TFSI", "ensemble": "nvt", "temperature": 298, "n_steps": 40}
    spec = CampaignSpec(
        name="vac",
        system={"ions": {"PYR14": 1, "TFSI": 1}, "density": 1.0},
        train={"engine": "mace"},
        explore={"engine": "ase"},
        production=[{**run, "frame_every": 4, "vacuum_box": 16.0}],
    )
    elements = ["H", "C", "N", "O", "F", "S"]
    small = {"hidden_irreps": "8x0e+8x1o", "r_max": 4.0, "max_ell": 1, "correlation": 1}
    models = [ModelFile.from_path(p) for p in write_committee(tmp_path, elements, 2, seed=1, **small)]
    prod = spec.production[0]
    start = start_box(spec, prod)
    assert len(start.species) == 15 and start.cell[0][0] == 16.0
    md = EXPLORERS.section(
        dict(engine="ase", ensemble="nvt", temperature=298, n_steps=40, frame_every=4, timestep=0.5)
    )
    result = get_explorer("ase").explore(models, start, elements, md, 1, tmp_path)
    production = Production(
        **result.model_dump(),
        campaign="vac",
        iteration=0,
        run="tfsi",
        members=[0, 1],
        model_sha256=["a", "b"],
    )
    props = liquid_properties(production, prod, run_molecules(spec, prod), "uuid")
    assert props.n_frames == 9  # 11 frames, the first 20 % left out
    assert set(props.tfsi_conformers) <= {"Cis", "aCis", "Trans", "aTrans"}
    assert sum(props.tfsi_conformers.values()) == pytest.approx(1.0)
    assert props.tfsi_conformers.get("aTrans", 0) > 0  # starts from the aTrans template, 40 steps at 298 K
