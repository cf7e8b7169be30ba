"""Engines registered from outside ilflows: the fake DFT engine, trainer and explorer of
``fake_engines.py`` are right on their own, and a whole campaign runs on them through the
command line, the queue and the store in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from cli_runs import fake_engines_env, ilflows, ilflows_read

from ilflows.dft import ENGINES
from ilflows.schemas.frames import Frame, FrameOrigin
from ilflows.schemas.records import DFTLabel
from ilflows.select import force_deviations
from ilflows.train import TRAINERS

# 3 packed boxes of one pair and their rattled copies, 4 members, 2 walkers of 10 recorded frames.
FAKE = {
    "name": "fake",
    "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
    "initial": {"density_factors": [1.0], "boxes_per_density": 3, "rattled_copies": 1},
    "dft": {"engine": "pair-dft"},
    "train": {"engine": "pair-fit", "n_models": 4},
    "explore": {"engine": "rattle-walk", "n_steps": 100, "frame_every": 10, "n_walkers": 2},
    "select": {"trust_lo": 0.006, "trust_hi": 1.0, "max_candidates": 4},
    "guards": {"max_void": None},
    "loop": {"max_iterations": 2, "accurate_ratio": 0.999},
}


def _box(seed: int) -> Frame:
    rng = np.random.default_rng(seed)
    return Frame(
        species=["B", "F", "F", "F", "F", "C", "H"],
        positions=rng.uniform(0, 5, (7, 3)).tolist(),
        cell=[[5.0, 0, 0], [0.4, 5.5, 0], [0, 0, 6.0]],
    )


def test_pair_labels_are_the_derivatives_of_their_energy(fake_engines, tmp_path):
    frame, h = _box(0), 1e-5
    spec = ENGINES.section({"engine": "pair-dft"})
    label = fake_engines.PairDft().label(frame, spec, tmp_path)

    def energy(positions, cell=frame.cell):
        return (
            fake_engines.PairDft()
            .label(Frame(species=frame.species, positions=positions, cell=cell), spec, tmp_path)
            .energy
        )

    x = np.asarray(frame.positions)
    numeric = np.zeros_like(x)
    for a, c in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[a, c] = h
        numeric[a, c] = -(energy((x + step).tolist()) - energy((x - step).tolist())) / (2 * h)
    np.testing.assert_allclose(label.forces, numeric, atol=1e-8)
    # pressure sign, GPa: -(1/V) dE/d(strain), the atoms moving with the cell
    cell, volume = np.asarray(frame.cell), abs(np.linalg.det(frame.cell))
    strained = [
        energy(
            (x @ (np.eye(3) + s * np.eye(3)[0:1].T @ np.eye(3)[0:1])).tolist(),
            (cell @ (np.eye(3) + s * np.eye(3)[0:1].T @ np.eye(3)[0:1])).tolist(),
        )
        for s in (h, -h)
    ]
    p_xx = -(strained[0] - strained[1]) / (2 * h) / volume / fake_engines.GPa
    assert label.stress[0][0] == pytest.approx(p_xx, rel=1e-6)


def test_members_disagree_less_as_the_labels_grow(fake_engines, tmp_path):
    type_map = ["H", "B", "C", "F"]
    frames = [_box(seed) for seed in range(60)]
    engine, spec = fake_engines.PairDft(), ENGINES.section({"engine": "pair-dft"})
    labels = []
    for k, frame in enumerate(frames):
        origin = FrameOrigin(campaign="c", stage="initial", method="packed", index=k)
        result = engine.label(frame, spec, tmp_path)
        labels.append(
            DFTLabel(
                **result.model_dump(),
                campaign="c",
                iteration=-1,
                frame_id=origin.frame_id,
                frame=frame,
                origin=origin,
            )
        )
    trainer, family = fake_engines.PairFit(), TRAINERS.section({"engine": "pair-fit"})
    held_out = labels[50:]

    def spread(n: int) -> float:
        members = []
        for seed in range(4):
            result = trainer.train(
                labels[:n],
                type_map,
                trainer.hyperparameters(family, type_map, seed),
                tmp_path / f"{n}-{seed}",
            )
            members.append(fake_engines.PairModel(result.model_file.write(tmp_path / f"{n}-{seed}.pairfit")))
        return np.mean(
            [
                force_deviations(np.stack([m.terms(lab.frame.to_ase(), True)[1] for m in members]))[0]
                for lab in held_out
            ]
        )

    few, many = spread(3), spread(50)
    assert 0 < many < few / 2  # bootstrap members agree more on more labels, never exactly (other widths)


def test_a_two_iteration_campaign_runs_on_registered_engines(tmp_path):
    spec = tmp_path / "fake.yaml"
    spec.write_text(yaml.safe_dump(FAKE))
    home = tmp_path / "home"
    # Without the plugin the spec names an engine no registry has: refused in one line, nothing queued.
    refused = ilflows(["run", str(spec)], home)
    assert refused.returncode != 0
    assert "dft.engine: unknown DFT engine 'pair-dft'; known: cp2k-dft, cp2k-xtb, vasp" in refused.stderr

    proc = ilflows(["run", str(spec)], home, **fake_engines_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "27/27 jobs completed, 0 fizzled" in proc.stdout
    header, *table = proc.stdout[proc.stdout.index("per-iteration results, exploration") :].splitlines()[1:4]
    starts = {name: header.index(name) for name in header.split()}  # aligned columns ("stage 0" has a space)
    rows = [{name: row[at:].split()[0] for name, at in starts.items()} for row in table]
    assert [row["iteration"] for row in rows] == ["0", "1"]
    # the committee learns: its deviation on the explored frames falls, more of them are accurate
    assert float(rows[1]["devi_median_eV_A"]) < float(rows[0]["devi_median_eV_A"])
    assert float(rows[1]["accurate_ratio"]) > float(rows[0]["accurate_ratio"])

    query = ilflows_read(["query", "labels", "--json"], home, **fake_engines_env())
    labels = json.loads(query.stdout)
    assert {label["engine"] for label in labels} == {"pair-dft"}
    assert len(labels) == 6 + 4  # the initial set, then one iteration's selection


def test_a_plugin_that_cannot_be_imported_is_named_in_one_line(tmp_path):
    spec = tmp_path / "fake.yaml"
    spec.write_text(yaml.safe_dump(FAKE))
    env = {**fake_engines_env(), "ILFLOWS_PLUGINS": "fake_engines, no_such_module"}
    proc = ilflows(["check", str(spec)], tmp_path / "home", **env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "ilflows: error: setting plugins: cannot import 'no_such_module' (No module named 'no_such_module'); "
        "fix ILFLOWS_PLUGINS"
    )


NO_TORCH = """
import json, sys
from ase.build import molecule
from ilflows.execute import torch_threads
from ilflows.explore.committee import CommitteeCalculator

model = {"type_map": ["H", "C"], "widths": [0.6], "e0": {"H": -1.0, "C": -4.0}}
paths = []
for k, amplitude in enumerate((0.2, 0.3)):
    model["amplitudes"] = {kind: [amplitude] for kind in ("C-C", "C-H", "H-H")}
    paths.append(f"m{k}.pairfit")
    open(paths[-1], "w").write(json.dumps(model))
atoms = molecule("CH4", vacuum=3.0, pbc=True)
with torch_threads():
    calc = CommitteeCalculator(paths, drive="mean")
    calc.calculate(atoms, ["deviation"])
print(json.dumps({"deviation": calc.results["deviation"], "torch": "torch" in sys.modules}))
"""


def test_a_committee_without_mace_members_never_loads_torch(tmp_path):
    # scoring DeePMD or other members in a worker need not pay torch's and MACE's 4-s import
    env = {**os.environ, **fake_engines_env()}
    run = subprocess.run(
        [sys.executable, "-c", "import fake_engines\n" + NO_TORCH],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["deviation"] > 0 and not result["torch"]
