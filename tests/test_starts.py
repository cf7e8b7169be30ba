"""Walkers started from structure files: atoms put in the composition's order, bad files refused."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from conftest import PEER_DATA

from ilflows.schemas.campaign import CampaignSpec
from ilflows.systems import pack_box, species, topology
from ilflows.systems.guards import check_frame
from ilflows.systems.starts import read_start

PEER_CONFS = PEER_DATA.parents[1] / "confs"
PAIR = {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22}


def _spec(**explore) -> CampaignSpec:
    return CampaignSpec(
        name="s", system=[{"ions": {"BF4": 4, "PYR14": 4}, "density": 0.8}, PAIR], explore=explore
    )


def test_a_shuffled_box_comes_back_in_composition_order(tmp_path):
    spec = _spec()
    box = pack_box(spec.system[0], 0.8, seed=3, workdir=tmp_path / "pack")
    atoms = box.to_ase()
    shuffled = np.random.default_rng(0).permutation(len(atoms))
    atoms = atoms[shuffled]
    atoms.positions += 7.0  # molecules cut by the cell walls once wrapped
    atoms.wrap()
    ase.io.write(tmp_path / "start.extxyz", atoms)
    k, frame = read_start(tmp_path / "start.extxyz", spec)
    assert k == 0 and frame.species == species(spec.system[0])
    assert check_frame(frame, topology(spec.system[0]), max_void=None).ok  # every template bond found
    # the same molecules in the same places: each ion's atoms are a permutation of the packed ion's
    moved = (np.asarray(box.positions) + 7.0) % np.diag(box.cell)
    molecules = topology(spec.system[0])
    for name, atoms_of in molecules:
        got = np.sort(np.asarray(frame.positions)[atoms_of], axis=0)
        assert any(np.allclose(got, np.sort(moved[other], axis=0)) for ion, other in molecules if ion == name)


def test_the_peer_poscars_start_walkers_of_the_pair():
    spec = _spec()
    for name in ("ip35.POSCAR", "ip35_b.POSCAR"):
        k, frame = read_start(PEER_CONFS / name, spec)
        assert k == 1 and frame.species == species(spec.system[1])
        assert check_frame(frame, topology(spec.system[1]), max_void=None).ok
        assert not check_frame(  # read as written (H first), the template bonds are all wrong
            frame.model_copy(update={"positions": ase.io.read(PEER_CONFS / name).positions.tolist()}),
            topology(spec.system[1]),
            max_void=None,
        ).ok


def test_a_file_of_another_liquid_is_refused_in_one_line(tmp_path):
    atoms = ase.io.read(PEER_CONFS / "ip35.POSCAR")
    ase.io.write(tmp_path / "lonely.extxyz", atoms[[a.index for a in atoms if a.symbol != "B"]])
    with pytest.raises(
        ValueError,
        match=r"^\S+lonely.extxyz \(C9H20F4N\) matches no composition of system "
        r"\(4 BF4, 4 PYR14; 1 BF4, 1 PYR14\)$",
    ):
        read_start(tmp_path / "lonely.extxyz", _spec())


def test_a_broken_molecule_is_refused(tmp_path):
    atoms = ase.io.read(PEER_CONFS / "ip35.POSCAR")
    atoms.positions[atoms.symbols == "B"] += 3.0  # B leaves its fluorines
    ase.io.write(tmp_path / "torn.extxyz", atoms)
    with pytest.raises(ValueError, match="1 BF4 expected, 0 found bonded as in its template"):
        read_start(tmp_path / "torn.extxyz", _spec())


def test_walker_count_and_start_files_must_agree():
    with pytest.raises(ValueError, match="n_walkers: 3 but explore.starts lists 2 files"):
        _spec(starts=["a.POSCAR", "b.POSCAR"], n_walkers=3)
    assert _spec(starts=["a.POSCAR", "b.POSCAR"]).explore.n_walkers == 2


def test_a_bad_start_file_is_refused_before_anything_is_queued(tmp_path):
    from ilflows.preflight import preflight
    from ilflows.schemas.campaign import SpecError

    atoms = ase.io.read(PEER_CONFS / "ip35.POSCAR")
    atoms.positions[atoms.symbols == "B"] += 3.0
    ase.io.write(tmp_path / "torn.extxyz", atoms)
    spec = CampaignSpec(
        name="s", system=PAIR, explore={"starts": [PEER_CONFS / "ip35.POSCAR", tmp_path / "torn.extxyz"]}
    )
    with pytest.raises(
        SpecError,
        match=r"^explore.starts.1: \S+torn.extxyz: 1 BF4 expected, 0 found bonded as in its template$",
    ):
        preflight(spec)
