"""VASP inputs with paper 1's settings (there is no VASP here) and parsing of a real vasprun.xml."""

import shlex
import shutil
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from ase.units import GPa
from pydantic import ValidationError

from ilflows.dft import ENGINES, get_engine
from ilflows.dft.vasp import atom_order
from ilflows.execute import EngineError
from ilflows.schemas.frames import Frame
from ilflows.settings import get_settings

POSCAR = Path(__file__).resolve().parents[2] / "shared/peer-dpgen/confs/ip35.POSCAR"
# A VASP 6.3.0 single point (2-atom carbon, PSTRESS = 1 kbar) shipped with ASE's tests.
VASPRUN = Path(ase.__file__).parent / "test/testdata/vasp/vasprun_pstress.xml"


@pytest.fixture(scope="module")
def engine():
    return get_engine("vasp")


@pytest.fixture(scope="module")
def pair() -> Frame:
    """One PYR14+ BF4- pair: 35 atoms, H first and B F C N interleaved."""
    if not POSCAR.is_file():
        pytest.skip(f"peer frame not found at {POSCAR}")
    return Frame.from_ase(ase.io.read(POSCAR))


def written(engine, frame, spec, workdir):
    from pymatgen.io.vasp import Incar, Kpoints, Poscar

    parameters = engine.write_inputs(frame, spec, workdir)
    return (
        parameters,
        Incar.from_file(workdir / "INCAR"),
        Kpoints.from_file(workdir / "KPOINTS"),
        Poscar.from_file(workdir / "POSCAR"),
    )


def test_spec_refuses_settings_the_engine_does_not_use():
    with pytest.raises(ValidationError, match="encut\n  Extra inputs"):
        ENGINES.section({"engine": "cp2k-dft", "encut": 500})
    with pytest.raises(ValidationError, match="functional\n  Input should be 'PBE' or 'SCAN'"):
        ENGINES.section({"engine": "vasp", "functional": "B97-3c"})
    with pytest.raises(ValidationError, match="cutoff\n  Extra inputs"):
        ENGINES.section({"engine": "vasp", "cutoff": 400})


def test_pbe_inputs_are_paper_settings(engine, pair, tmp_path):
    parameters, incar, kpoints, poscar = written(engine, pair, ENGINES.section(dict(engine="vasp")), tmp_path)
    paper = {"ENCUT": 450, "EDIFF": 1e-6, "ISMEAR": 0, "SIGMA": 0.05, "IVDW": 11}
    assert {k: incar[k] for k in paper} == paper
    assert incar["GGA"].upper() == "PE" and "METAGGA" not in incar
    # Liquid box: no symmetry, no spin, no magnetic moments; a single point with its stress.
    assert incar["ISYM"] == 0 and incar["ISPIN"] == 1 and "MAGMOM" not in incar
    assert (incar["NSW"], incar["IBRION"], incar["ISIF"]) == (0, -1, 2)
    assert incar["LREAL"] == "Auto" and incar["NELM"] == 50
    assert not incar["LWAVE"] and not incar["LCHARG"]
    assert kpoints.style.name == "Gamma" and list(kpoints.kpts[0]) == [1, 1, 1]
    # One POTCAR per element: species grouped in order of first appearance, positions kept.
    assert poscar.site_symbols == ["H", "B", "C", "N", "F"] == parameters["potcar_symbols"]
    order = atom_order(pair)
    assert [pair.species[i] for i in order] == [s.specie.symbol for s in poscar.structure]
    assert np.allclose(poscar.structure.cart_coords, np.array(pair.positions)[order], atol=1e-6)
    assert parameters["incar"]["ENCUT"] == 450 and parameters["kpoints"] == "gamma 1x1x1"


def test_scan_bj_small_box(engine, tmp_path):
    water = Frame(
        species=["O", "H", "H"],
        positions=[[3.0, 3.0, 3.0], [3.76, 3.59, 3.0], [2.24, 3.59, 3.0]],
        cell=(6.0 * np.eye(3)).tolist(),
    )
    spec = ENGINES.section(dict(engine="vasp", functional="SCAN", dispersion="D3(BJ)", stress=False))
    _, incar, _, _ = written(engine, water, spec, tmp_path)
    assert incar["METAGGA"].upper() == "SCAN" and "GGA" not in incar and incar["LASPH"]
    assert incar["IVDW"] == 12 and incar["LREAL"] is False and incar["ISIF"] == 0


def test_missing_potcars_are_recorded_not_faked(engine, pair, tmp_path):
    from pymatgen.core import SETTINGS

    if SETTINGS.get("PMG_VASP_PSP_DIR"):
        pytest.skip("POTCARs are configured here")
    parameters = engine.write_inputs(pair, ENGINES.section(dict(engine="vasp")), tmp_path)
    assert parameters["potcar"].startswith("missing") and "PMG_VASP_PSP_DIR" in parameters["potcar"]
    assert not (tmp_path / "POTCAR").exists()
    assert (tmp_path / "POTCAR.spec").read_text().split() == ["H", "B", "C", "N", "F"]


def test_vasprun_parsed_like_ase(engine, tmp_path):
    if not VASPRUN.is_file():
        pytest.skip("ASE's VASP test data not installed")
    shutil.copy(VASPRUN, tmp_path / "vasprun.xml")
    atoms = ase.io.read(tmp_path / "vasprun.xml")
    out = engine.parse_output(Frame.from_ase(atoms), tmp_path)
    assert out.scf_converged
    assert out.energy == pytest.approx(atoms.get_potential_energy(force_consistent=True), abs=1e-6)
    assert np.allclose(out.forces, atoms.get_forces())
    # Pressure sign in GPa: ASE's stress is the opposite sign in eV/Å^3.
    assert np.allclose(out.stress, -atoms.get_stress(voigt=False) / GPa)


def test_label_without_vasp_names_the_setting(engine, pair, tmp_path):
    if shutil.which(shlex.split(get_settings().vasp_cmd)[0]):
        pytest.skip("VASP is installed here")
    with pytest.raises(EngineError, match="ILFLOWS_VASP_CMD"):
        engine.label(pair, ENGINES.section(dict(engine="vasp")), tmp_path)
