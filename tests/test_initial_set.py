"""The initial set of a campaign: packed boxes, xTB MD frames, imports and validation boxes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_runs import ROOT, fake_engines_env, ilflows, ilflows_read

SHARED = ROOT.parent / "shared"
PEER = SHARED / "peer-dpgen/init_data/ip35"
EAN = SHARED / "reference-data/EAN_neuralil_validation_75frames.extxyz"
PEER_IMPORT = {"format": "deepmd-npy", "level_of_theory": "GFN1-xTB (CP2K)", "source": "peer-dpgen init_data"}

pytestmark = pytest.mark.skipif(
    not PEER.is_dir() or not EAN.exists(), reason=f"reference data not in {SHARED}"
)


def _spec(tmp_path: Path, name: str, imports: list[dict], md: list[dict] | None = None) -> Path:
    spec = {
        "name": name,
        "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
        "initial": {
            "density_factors": [1.0],
            "boxes_per_density": 1,
            "rattled_copies": 0,
            "imports": imports,
            "md": md or [],
        },
        # real CP2K MD and labels (what is tested); fake training and exploration
        "train": {"engine": "pair-fit", "n_models": 2},
        "explore": {"engine": "rattle-walk", "n_steps": 40, "frame_every": 20, "n_walkers": 1},
        "guards": {"max_void": None},
        "loop": {"max_iterations": 1},
        "validation": {
            "density_factors": [0.9, 1.1],
            "boxes_per_density": 1,
            "md": [{"n_steps": 10, "every": 5}],
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _ilflows(args: list[str], home: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    return ilflows(args, home, timeout=timeout, **fake_engines_env())


def test_import_of_another_liquid_is_refused_before_queueing(tmp_path):
    ean = {"path": str(EAN), "format": "extxyz", "level_of_theory": "not stated", "source": "NeuralIL"}
    proc = _ilflows(["run", str(_spec(tmp_path, "wrong", [ean]))], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "ilflows: error: initial.imports.0: elements O are not in the campaign's system "
        "(B, C, F, H, N); import data of the same liquid"
    )
    assert not (tmp_path / "launchpad.json").exists()


def test_check_prints_the_import_report(tmp_path):
    relative = os.path.relpath(PEER, tmp_path)  # paths in a spec are relative to the spec's folder
    proc = _ilflows(["check", str(_spec(tmp_path, "rep", [{**PEER_IMPORT, "path": relative}]))], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "initial.imports.0 (ip35):" in proc.stdout and "20 frames, 0 skipped" in proc.stdout


def _first_frames(source: Path, n: int, folder: Path) -> Path:
    """A deepmd-npy copy of the first ``n`` frames of ``source``: one import job per frame."""
    (folder / "set.000").mkdir(parents=True)
    for raw in ("type.raw", "type_map.raw"):
        shutil.copy(source / raw, folder / raw)
    for array in (source / "set.000").glob("*.npy"):
        np.save(folder / "set.000" / array.name, np.load(array)[:n])
    return folder


@pytest.mark.slow
def test_md_and_imported_labels_are_trained_on_and_validation_ones_held_out(tmp_path):
    peer = _first_frames(PEER, 5, tmp_path / "peer5")
    imports = [
        {**PEER_IMPORT, "path": str(peer)},
        {**PEER_IMPORT, "path": str(peer), "stage": "validation"},
    ]
    md = [
        {"temperature": 450, "n_steps": 10, "every": 5},  # EQ
        {"temperature": 1500, "timestep": 2.0, "n_steps": 10, "every": 5, "equilibrated": False},  # hot nEQ
    ]
    proc = _ilflows(["run", str(_spec(tmp_path, "imp", imports, md))], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    labels = json.loads(ilflows_read(["query", "labels", "--json"], tmp_path).stdout)
    ids = {lab["frame_id"] for lab in labels}
    assert {f"imp/initial/import0/{i}" for i in range(5)} <= ids
    assert {f"imp/validation/import1/{i}" for i in range(5)} <= ids
    assert {"imp/validation/0", "imp/validation/1"} <= ids  # packed validation boxes, labelled
    assert {"imp/validation/md2/0", "imp/validation/md2/1"} <= ids  # EQ validation frames from MD
    # box indices: 1 packed frame, 1 walker start, then the two MD boxes (2 and 3)
    md_labels = [lab for lab in labels if lab["method"] == "md" and "/initial/" in lab["frame_id"]]
    assert {lab["frame_id"] for lab in md_labels} <= {
        f"imp/initial/md{b}/{k}" for b in (2, 3) for k in (0, 1)
    }
    assert {"imp/initial/md2/0", "imp/initial/md2/1"} <= {lab["frame_id"] for lab in md_labels}  # EQ run kept
    trainings = json.loads(ilflows_read(["query", "trainings", "--json"], tmp_path).stdout)
    # 1 packed box + 5 imported + the MD frames the guards kept, never the validation ones
    assert [t["n_frames"] + t["n_held_out"] for t in trainings] == [6 + len(md_labels)] * 2
