"""D3 through torch-dftd (ilflows.dispersion): against CP2K's own D3(BJ), round trips, the committee.

The CP2K runs label a water dimer in a 6 Å box at the cheap settings of test_dft_cp2k_dft.py,
with a loose SCF: a run with D3 and one without differ by CP2K's D3 terms alone, whatever the
SCF, since D3 does not enter it.
"""

import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from ase import units
from ase.calculators.calculator import Calculator, all_changes
from ase.neighborlist import neighbor_list
from ase.stress import full_3x3_to_voigt_6_stress

from ilflows.dft import ENGINES, get_engine
from ilflows.dispersion import (
    CP2K_R_CUTOFF,
    cp2k_d3_settings,
    d3_calculator,
    d3_terms,
    with_d3,
    without_d3,
)
from ilflows.schemas.frames import Frame, FrameOrigin
from ilflows.schemas.records import DFTLabel, DFTResult
from ilflows.select import max_force_deviation
from ilflows.settings import get_settings

CP2K = shlex.split(get_settings().cp2k_cmd)[0]
needs_cp2k = pytest.mark.skipif(
    shutil.which(CP2K) is None, reason=f"CP2K executable '{CP2K}' not found (set ILFLOWS_CP2K_CMD)"
)
DIMER = Frame(
    species=["O", "H", "H", "O", "H", "H"],
    positions=[
        [2.0, 2.0, 2.0],
        [2.76, 2.59, 2.0],
        [1.24, 2.59, 2.0],
        [2.1, 4.9, 2.3],
        [2.3, 5.5, 1.6],
        [2.8, 5.2, 2.9],
    ],
    cell=(6.0 * np.eye(3)).tolist(),
)
CHEAP = {"engine": "cp2k-dft", "cutoff": 150.0, "rel_cutoff": 30.0, "eps_scf": 1e-4, "max_scf": 30}
PBE = {"functional": "pbe", "damping": "bj", "three_body": False}


def water_box(n: int = 3, spacing: float = 3.1, seed: int = 0) -> Frame:
    """n^3 water molecules, randomly turned, on a cubic grid: 1.0 g/cm^3 at 3.1 Å spacing."""
    rng = np.random.default_rng(seed)
    water = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])
    positions = []
    for site in np.ndindex(n, n, n):
        turn, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        positions.extend((np.array(site) + 0.5) * spacing + water @ turn.T)
    return Frame(
        species=["O", "H", "H"] * n**3,
        positions=np.array(positions).tolist(),
        cell=(n * spacing * np.eye(3)).tolist(),
    )


def label_of(frame: Frame, result: DFTResult) -> DFTLabel:
    origin = FrameOrigin(campaign="d3", stage="initial", method="rattle", index=0)
    return DFTLabel(
        **result.model_dump(),
        campaign="d3",
        iteration=-1,
        frame_id=origin.frame_id,
        frame=frame,
        origin=origin,
    )


@pytest.fixture(scope="module")
def cp2k_labels(tmp_path_factory):
    """The dimer labelled without D3, with CP2K's default R_CUTOFF and with R_CUTOFF 5 Å."""
    specs = {
        "none": ENGINES.section(dict(**CHEAP, dispersion="none")),
        "default": ENGINES.section(dict(**CHEAP, dispersion="D3(BJ)")),
        "r_cutoff_5": ENGINES.section(dict(**CHEAP, dispersion="D3(BJ)", dispersion_cutoff=5.0)),
    }
    engine = get_engine("cp2k-dft")
    with ThreadPoolExecutor(len(specs)) as pool:
        jobs = {k: pool.submit(engine.label, DIMER, s, tmp_path_factory.mktemp(k)) for k, s in specs.items()}
        labels = {k: label_of(DIMER, job.result()) for k, job in jobs.items()}
    for key, label in labels.items():
        assert label.converged, f"{key}: {label.error}"
    return labels


@needs_cp2k
@pytest.mark.slow
@pytest.mark.parametrize(("key", "pair_cutoff"), [("default", 2 * CP2K_R_CUTOFF), ("r_cutoff_5", 10.0)])
def test_d3_matches_cp2k_d3bj(cp2k_labels, key, pair_cutoff):
    bare, label = cp2k_labels["none"], cp2k_labels[key]
    settings = cp2k_d3_settings(label)
    assert settings == {**PBE, "cutoff": pytest.approx(pair_cutoff)}
    terms = d3_terms(DIMER, **settings)
    cp2k_energy = label.energy - bare.energy
    cp2k_forces = np.subtract(label.forces, bare.forces)
    cp2k_stress = np.subtract(label.stress, bare.stress)
    # Measured: 2.5e-5 eV of -0.063 eV, 3.1e-5 eV/Å of forces up to 1.6e-3 eV/Å and 1.6e-5 GPa
    # of 0.067 GPa.  All of it is CP2K's tanh cap on the coordination numbers (torch-dftd
    # with that cap agrees to 1e-8 eV); the tolerances leave a factor 3 to 6.
    assert terms.energy == pytest.approx(cp2k_energy, abs=1e-4)
    assert np.abs(terms.forces - cp2k_forces).max() < 1e-4
    assert np.abs(terms.stress - cp2k_stress).max() < 1e-4
    assert cp2k_energy < -0.05 and np.abs(cp2k_forces).max() > 1e-3 and np.abs(cp2k_stress).max() > 0.05
    # CP2K's R_CUTOFF taken for the pair cutoff would miss by 7.4e-4 (default) and 8.1e-3 eV.
    short = d3_terms(DIMER, **{**settings, "cutoff": pair_cutoff / 2})
    assert abs(short.energy - cp2k_energy) > 5e-4


def test_without_d3_then_adding_d3_back_gives_the_label(tmp_path):
    rng = np.random.default_rng(3)
    result = DFTResult(
        engine="cp2k-dft",
        parameters={"functional": "PBE", "dispersion": "D3(BJ)", "dispersion_cutoff": None},
        converged=True,
        energy=-1234.5,
        forces=rng.normal(0, 1, (6, 3)).tolist(),
        stress=rng.normal(0, 0.1, (3, 3)).tolist(),
        wall_time=1.0,
    )
    label = label_of(DIMER, result)
    settings = cp2k_d3_settings(label)
    plain = without_d3(label, **settings)
    terms = d3_terms(DIMER, **settings)
    assert plain.energy + terms.energy == pytest.approx(label.energy, abs=1e-10)
    assert np.abs(np.add(plain.forces, terms.forces) - label.forces).max() < 1e-10
    assert np.abs(np.add(plain.stress, terms.stress) - label.stress).max() < 1e-10
    assert abs(plain.energy - label.energy) > 0.01  # something was removed
    assert plain.parameters["d3_removed"] == {
        "package": "torch-dftd 0.5.3",
        "functional": "pbe",
        "damping": "bj",
        "cutoff": pytest.approx(2 * CP2K_R_CUTOFF),
        "cn_cutoff": pytest.approx(2 * CP2K_R_CUTOFF),
        "three_body": False,
    }
    assert "d3_removed" not in label.parameters and label.energy == -1234.5  # the original is kept
    with pytest.raises(ValueError, match="already had D3 removed"):
        without_d3(plain, **settings)
    no_stress = without_d3(label.model_copy(update={"stress": None}), **settings)
    assert no_stress.stress is None and no_stress.energy == pytest.approx(plain.energy, abs=1e-12)
    bare = label.model_copy(update={"parameters": {**label.parameters, "dispersion": "none"}})
    with pytest.raises(ValueError, match="without dispersion"):
        without_d3(bare, **settings)


def test_cp2k_settings_and_refusals():
    engine = get_engine("cp2k-dft")

    def result(**spec):
        parameters = engine.parameters(ENGINES.section(dict(engine="cp2k-dft", **spec)))
        return DFTResult(engine="cp2k-dft", parameters=parameters, converged=False, wall_time=0.0)

    # ilflows' B97-3c writes R_CUTOFF 8: pairs up to 16 Å, with CP2K's C9 term.
    b97 = cp2k_d3_settings(result(functional="B97-3c"))
    assert b97 == {"functional": "b97-3c", "damping": "bj", "cutoff": 16.0, "three_body": True}
    assert cp2k_d3_settings(result(dispersion="D3"))["damping"] == "zero"
    with pytest.raises(ValueError, match="without dispersion"):
        cp2k_d3_settings(result(dispersion="none"))
    with pytest.raises(ValueError, match="cp2k-dft labels only"):
        cp2k_d3_settings(DFTResult(engine="vasp", parameters={}, converged=False, wall_time=0.0))
    with pytest.raises(NotImplementedError, match="periodic image"):
        d3_calculator(**b97)
    with pytest.raises(ValueError, match="no D3\\(zero\\) parameters for functional 'b97-3c'"):
        d3_calculator("b97-3c", "zero", 8.0, False)
    with pytest.raises(ValueError, match="damping"):
        d3_calculator("pbe", "bjm", 8.0, False)
    with pytest.raises(ValueError, match="cn_cutoff"):
        d3_calculator("pbe", "bj", 8.0, False, cn_cutoff=10.0)


def test_torch_dftd_three_body_forces_are_still_wrong_in_a_periodic_box():
    """Why three_body is refused; when this fails, torch-dftd fixed it and the refusal can go."""
    import torch
    from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator

    atoms = water_box(2).to_ase()  # 8 molecules in a 6.2 Å box

    def energy_and_forces(positions):
        moved = atoms.copy()
        moved.positions = positions
        moved.calc = TorchDFTD3Calculator(
            damping="bj", xc="pbe", cutoff=5.0, cnthr=5.0, abc=True, dtype=torch.float64
        )
        return moved.get_potential_energy(), moved.get_forces()

    forces = energy_and_forces(atoms.positions)[1]
    step = np.zeros_like(atoms.positions)
    step[6, 0] = 1e-4  # Å
    numeric = (
        -(energy_and_forces(atoms.positions + step)[0] - energy_and_forces(atoms.positions - step)[0]) / 2e-4
    )
    # Measured: off by 5.5e-5 eV/Å, a quarter of this atom's C9 force; two-body forces agree to 1e-8.
    assert abs(numeric - forces[6, 0]) > 1e-5


def test_d3_forces_are_the_energy_gradient():
    frame = water_box()
    cutoff, step = 8.0, 1e-3  # Å
    calc = d3_calculator("pbe", "bj", cutoff, False)
    atoms = frame.to_ase()
    atoms.calc = calc
    forces = atoms.get_forces()
    first, _, distance = neighbor_list("ijd", atoms, cutoff + 1.0)
    for atom in (1, 8, 15):
        # torch-dftd cuts pairs off without smoothing: no pair may cross the cutoff in a step
        assert np.abs(distance[first == atom] - cutoff).min() > 2 * step
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[atom, axis] += sign * step
                moved.calc = calc
                energies.append(moved.get_potential_energy())
            # Measured: 2e-8 eV/Å, for D3 forces of up to 4e-3 eV/Å in this box.
            assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(forces[atom, axis], abs=5e-6)


def test_cutoff_matters_in_a_dense_box():
    frame = water_box()  # 27 molecules, 9.3 Å box, 1.0 g/cm^3
    energies = {
        cutoff: d3_terms(frame, cutoff=cutoff, **PBE).energy for cutoff in (8.0, 20.0, 2 * CP2K_R_CUTOFF)
    }
    # Measured: -2.6188 eV at 8 Å, -2.7075 eV at 20 Å (-1.1 meV/atom more), -2.7084 eV at 21.17 Å.
    assert energies[20.0] - energies[8.0] == pytest.approx(-0.0887, abs=0.002)
    assert abs(energies[2 * CP2K_R_CUTOFF] - energies[20.0]) < 0.002


class Committee(Calculator):
    """Harmonic members driven by member 0, the others evaluated only for deviation or forces_comm.

    As ilflows' CommitteeCalculator: results beyond ASE's are ``deviation`` (eV/Å) and
    ``forces_comm`` (n_models, n_atoms, 3) eV/Å.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "deviation", "forces_comm"]

    def __init__(self, stiffness, centre):
        super().__init__()
        self.stiffness, self.centre = stiffness, np.asarray(centre)
        self.evaluated: list[int] = []
        self.members: dict[int, tuple[float, np.ndarray]] = {}

    def calculate(self, atoms=None, properties=("energy",), system_changes=tuple(all_changes)):
        super().calculate(atoms, properties, system_changes)
        if system_changes:
            self.members = {}
        full = not {"deviation", "forces_comm"}.isdisjoint(properties)
        for k in range(len(self.stiffness) if full else 1):
            if k not in self.members:
                self.evaluated.append(k)
                shift = self.atoms.positions - self.centre
                self.members[k] = (0.5 * self.stiffness[k] * (shift**2).sum(), -self.stiffness[k] * shift)
        energy, forces = self.members[0]
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
        self.results["stress"] = self.stiffness[0] * np.array([1.0, 2.0, 3.0, 0.1, 0.2, 0.3]) * 1e-3
        if len(self.members) == len(self.stiffness):
            self.results["forces_comm"] = np.stack([self.members[k][1] for k in sorted(self.members)])
            self.results["deviation"] = float(max_force_deviation(self.results["forces_comm"][:, None])[0])


def test_with_d3_adds_d3_and_keeps_the_committee_deviation():
    stiffness, centre = [1.0, 1.3, 0.8], np.array(DIMER.positions) + 0.05
    settings = {"cutoff": 12.0, **PBE}
    committee = Committee(stiffness, centre)
    hybrid = with_d3(committee, **settings)
    d3_calls = []
    d3_calculate = hybrid.d3.calculate
    hybrid.d3.calculate = lambda *args, **kwargs: d3_calls.append(1) or d3_calculate(*args, **kwargs)
    atoms = DIMER.to_ase()
    atoms.calc = hybrid
    forces = atoms.get_forces()
    assert committee.evaluated == [0]  # driving forces need member 0 only, as before
    deviation = hybrid.get_property("deviation", atoms)
    assert committee.evaluated == [0, 1, 2]
    energy, stress = atoms.get_potential_energy(), atoms.get_stress()
    assert len(d3_calls) == 1  # once for this geometry

    reference = DIMER.to_ase()
    reference.calc = Committee(stiffness, centre)
    terms = d3_terms(DIMER, **settings)
    assert np.abs(terms.forces).max() > 1e-3
    assert deviation == reference.calc.get_property("deviation", reference) > 0.01
    np.testing.assert_array_equal(
        hybrid.get_property("forces_comm", atoms), reference.calc.results["forces_comm"]
    )
    np.testing.assert_allclose(forces, reference.get_forces() + terms.forces, rtol=0, atol=1e-12)
    assert energy == pytest.approx(reference.get_potential_energy() + terms.energy, abs=1e-12)
    d3_stress = full_3x3_to_voigt_6_stress(-terms.stress * units.GPa)  # back to ASE's sign
    np.testing.assert_allclose(stress, reference.get_stress() + d3_stress, rtol=0, atol=1e-12)

    atoms.positions[0, 0] += 0.1  # a new geometry: everything again
    moved = atoms.get_forces()
    assert len(d3_calls) == 2 and committee.evaluated == [0, 1, 2, 0]
    assert np.abs(moved - forces).max() > 1e-3
