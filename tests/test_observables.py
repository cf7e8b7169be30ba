"""Stopping on liquid observables: short runs with each member driving must agree on density and diffusion."""

from __future__ import annotations

import json

import pytest
import yaml
from cli_runs import FAKE_ONE_ITERATION, ONE_ITERATION, fake_engines_env, ilflows, ilflows_read

from ilflows.analysis.properties import observable_spreads
from ilflows.schemas.results import DiffusionCoefficient, Properties


def _props(density: float | None, d_pyr: float) -> Properties:
    common = {"campaign": "c", "iteration": 0, "run": "r", "production_uuid": "u", "model_sha256": []}
    diffusion = [DiffusionCoefficient(ion="PYR14", d=d_pyr, window=(0, 1), lags=[], msd=[])]
    return Properties(
        **common,
        ensemble="npt",
        temperature=300,
        n_frames=5,
        time_span=1,
        density=density,
        diffusion=diffusion,
    )


def test_spreads_are_max_minus_min_over_the_mean():
    spreads = observable_spreads({"npt": [_props(1.0, 1e-10), _props(1.1, 3e-10)]})
    assert spreads == {"npt density": pytest.approx(0.1 / 1.05), "npt D PYR14": pytest.approx(2 / 2)}
    assert observable_spreads({"npt": [_props(1.0, 1e-10), None]}) == {}  # a failed member: no verdict


def test_a_campaign_stops_when_its_members_agree(tmp_path):
    # the loop's wiring is tested (runs per member, spreads, the stop) on the fake engines; real MD
    # observables are test_production's
    runs = [
        {"name": "rho", "ensemble": "npt", "temperature": 300, "n_steps": 100, "frame_every": 10},
        {
            "name": "diff",
            "ensemble": "nvt",
            "temperature": 300,
            "n_steps": 100,
            "frame_every": 10,
            "diffusion_window": [0.005, 0.03],
        },
    ]
    loop = {
        "max_iterations": 2,
        "observables": {"runs": runs, "density_tolerance": 10.0, "diffusion_tolerance": 50},
    }
    spec = tmp_path / "obs.yaml"
    spec.write_text(yaml.safe_dump({"name": "obs", **FAKE_ONE_ITERATION, "loop": loop}))
    proc = ilflows(["run", str(spec), "--quiet"], tmp_path, **fake_engines_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    from ilflows.settings import IlflowsSettings
    from ilflows.store import connect_jobstore

    store = connect_jobstore(IlflowsSettings(home=tmp_path))
    record = store.query_one({"output.kind": "selection"})["output"]
    assert record["iteration"] == 0 and record["converged"]  # iteration 1 never ran
    assert record["stop_reason"].startswith("members agree on observables (largest spread:")
    props = {
        d["output"]["run"]: Properties.model_validate(d["output"])
        for d in store.query({"output.kind": "properties"}, load=True)
    }
    assert sorted(props) == ["diff-it0-m0", "diff-it0-m1", "rho-it0-m0", "rho-it0-m1"]
    expected = observable_spreads(
        {name: [props[f"{name}-it0-m{k}"] for k in (0, 1)] for name in ("rho", "diff")}
    )
    assert record["observables"] == pytest.approx(expected)
    assert set(expected) == {"rho density", "diff D BF4", "diff D PYR14"}
    md = [d["output"] for d in store.query({"output.kind": "production"}, properties=["output.members"])]
    assert sorted(tuple(m["members"]) for m in md) == [
        (0, 1),
        (0, 1),
        (1, 0),
        (1, 0),
    ]  # each member drives once
    table = json.loads(ilflows_read(["status", "--json"], tmp_path, **fake_engines_env()).stdout)["obs"][
        "iterations"
    ]
    assert [row["iteration"] for row in table] == [0]


def test_observable_runs_are_checked_like_production_runs(tmp_path):
    runs = [{"name": "x", "rdf_pairs": [["Li", "O"]]}]
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"name": "bad", **ONE_ITERATION, "loop": {"observables": {"runs": runs}}}))
    proc = ilflows(["check", str(spec)], tmp_path)
    assert (
        proc.returncode == 2
        and "loop.observables.runs.0.rdf_pairs: ['Li', 'O'] names elements" in proc.stderr
    )
