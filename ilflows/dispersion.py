"""Grimme's D3 dispersion through torch-dftd, for hybrid models: E = E_MLP + E_D3.

The BMIM-BF4 paper labels with B97-3c and its D3(BJ), then trains hybrid models on
the labels without D3 and adds D3 back on top of the model at run time, through the
Torch-DFTD package.  Here :func:`without_d3` makes such a training label,
:func:`with_d3` wraps any ASE calculator (an MLP, the committee) into MLP + D3, and
:func:`d3_terms` gives the D3 energy, forces and stress of one frame.

Units: energies eV, forces eV/Å, stress GPa with the pressure sign of the labels (positive
when compressed; ASE's is the opposite), lengths Å.

Grimme's D3 as torch-dftd computes it matches the reference implementation (simple-dftd3)
to 1e-8 eV.  CP2K's own D3, which writes the cp2k-dft labels, differs from it (measured on a
water dimer in a 6 Å box, see ``tests/test_dispersion.py``):

* CP2K's ``R_CUTOFF`` is half the pair cutoff: CP2K sums pairs up to 2 x ``R_CUTOFF``, so its
  default (20 bohr) is a 21.17 Å pair cutoff and the BMIM-BF4 paper's "8 Å" (``R_CUTOFF 7.93766`` in
  its CP2K input) is 15.9 Å.  :func:`cp2k_d3_settings` does this conversion for a label.
* CP2K multiplies the coordination-number counting function by 0.5 (1 - tanh(r - 2 r_cov))
  (r in bohr), which lowers a bonded H's coordination number by 0.3 %.  The C6 coefficients
  shift with it: D3 energies differ by 4e-4 of themselves (2.5e-5 eV on the dimer), forces by
  3e-5 eV/Å, stress by 2e-5 GPa.  A model trained on ``without_d3`` labels learns this
  short-ranged remainder with the rest of the DFT energy.
* CP2K's three-body (C9) term, on for B97-3c, selects triangles differently (every side
  below the pair cutoff and the product of the sides below 0.1 pair cutoff^3); on 27 water
  molecules at 1 g/cm^3 it gives +0.118 eV, torch-dftd (whose C9 energy matches
  simple-dftd3's) +0.124 eV with an 8 Å range and +0.128 eV with 16 Å, about 5 % of the
  two-body D3 energy.
* B97-3c in CP2K adds a short-range bond correction to its D3 that torch-dftd does not have
  (-0.31 eV on the water dimer); :func:`without_d3` leaves it in the label.
* With zero damping CP2K switches each pair off smoothly over the last bohr before the
  cutoff; torch-dftd cuts it off.

The three-body term is refused here: torch-dftd 0.5.3 gets its energy right but not its
forces and stress in a periodic box.  It stores the C6 of every pair with
``c6_mem[i, j] = c6`` over all periodic images of the pair, and autograd then hands each
image the full gradient, so the coordination-number part of the C9 forces is counted once
per image (on 8 water molecules in a 6.2 Å box: forces off by 1.4e-3 eV/Å where the largest
C9 force of simple-dftd3 is 6e-4 eV/Å; with one image writing per pair they agree to 1e-9).
Its C9 is also slow: 7 s on 81 atoms with an 8 Å range, 470 s with 16 Å.  Paper 1's hybrid
models add the two-body D3 only (torch-dftd ``abc=False``); removing only the two-body D3
from a B97-3c label leaves its C9 (short-ranged, within 8 Å to 3 %) for the model to learn.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from typing import NamedTuple

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from ilflows.execute import torch_device
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import DFTLabel, DFTResult

DAMPINGS = ("bj", "zero")
# Grimme's cut-off of the coordination numbers (dftd3's cn_thr, torch-dftd's default cnthr):
# 40 bohr, 21.17 Å.  A pair of first- or second-row atoms further apart adds less than 1e-6
# to a coordination number.
CN_CUTOFF = 40.0 * units.Bohr
# CP2K's default PAIR_POTENTIAL R_CUTOFF, 20 bohr; its pair cutoff is twice R_CUTOFF.
CP2K_R_CUTOFF = 20.0 * units.Bohr
# ilflows functional names -> torch-dftd's (cp2k-dft labels).
TORCH_DFTD_NAMES = {"PBE": "pbe", "B97-3c": "b97-3c"}


class D3Terms(NamedTuple):
    """D3 contribution to the energy, forces and stress of one frame."""

    energy: float
    """Energy, eV."""
    forces: np.ndarray
    """Forces, shape (n_atoms, 3), eV/Å."""
    stress: np.ndarray
    """Stress, shape (3, 3), GPa, pressure sign (positive when compressed), as labels carry it."""


def d3_calculator(
    functional: str,
    damping: str,
    cutoff: float,
    three_body: bool,
    cn_cutoff: float | None = None,
):
    """Return torch-dftd's D3 calculator on the CPU in float64.

    Parameters
    ----------
    functional
        Functional whose D3 parameters to use, torch-dftd's name, e.g. ``"pbe"`` or
        ``"b97-3c"`` (case is ignored).
    damping
        ``"bj"`` (Becke-Johnson) or ``"zero"``.
    cutoff
        Pair cutoff, Å; pairs further apart are left out (no smoothing).
    three_body
        Add the Axilrod-Teller-Muto three-body (C9) term: refused while torch-dftd's
        three-body forces are wrong in periodic boxes (see the module notes).
    cn_cutoff
        Cut-off of the coordination numbers, Å, at most ``cutoff``; default
        ``min(cutoff, CN_CUTOFF)``, Grimme's 21.17 Å unless the pair cutoff is shorter.

    Returns
    -------
    torch_dftd.torch_dftd3_calculator.TorchDFTD3Calculator
        An ASE calculator of energy (eV), forces (eV/Å) and, for a periodic box, stress
        (ASE's eV/Å^3, positive when stretched).

    Raises
    ------
    ValueError
        For an unknown damping or functional, a cutoff that is not positive or a
        ``cn_cutoff`` outside (0, cutoff].
    NotImplementedError
        For the three-body term.

    """
    import torch
    from torch_dftd.dftd3_xc_params import get_dftd3_default_params
    from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator

    if damping not in DAMPINGS:
        raise ValueError(f"damping must be one of {DAMPINGS}, got {damping!r}")
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff} Å")
    if three_body:
        raise NotImplementedError(
            f"D3 three-body (C9) term: torch-dftd {version('torch-dftd')} gets its forces and stress "
            "wrong in periodic boxes (C6 gradients counted once per periodic image); remove and add "
            "the two-body D3 only (three_body=False), as the BMIM-BF4 paper's hybrid models do"
        )
    if cn_cutoff is None:
        cn_cutoff = min(cutoff, CN_CUTOFF)
    if not 0 < cn_cutoff <= cutoff:
        raise ValueError(f"cn_cutoff must lie in (0, cutoff={cutoff}] Å, got {cn_cutoff}")
    xc = functional.lower()
    try:
        get_dftd3_default_params(damping, xc)
    except ValueError:
        message = f"torch-dftd has no D3({damping}) parameters for functional {functional!r}"
        raise ValueError(message) from None
    return TorchDFTD3Calculator(
        damping=damping,
        xc=xc,
        cutoff=float(cutoff),
        cnthr=float(cn_cutoff),
        abc=bool(three_body),
        dtype=torch.float64,
        device=torch_device(),
    )


def d3_terms(
    frame: Frame,
    functional: str,
    damping: str,
    cutoff: float,
    three_body: bool,
    cn_cutoff: float | None = None,
) -> D3Terms:
    """Return the D3 energy (eV), forces (eV/Å) and stress (GPa, pressure sign) of a periodic frame.

    The arguments after ``frame`` are those of :func:`d3_calculator`; ``cutoff`` and
    ``cn_cutoff`` in Å.
    """
    calc = d3_calculator(functional, damping, cutoff, three_body, cn_cutoff)
    atoms = frame.to_ase()
    with _quiet():
        forces = calc.get_property("forces", atoms)  # one pass gives energy, forces and stress
        energy = calc.get_property("energy", atoms)
        stress = calc.get_property("stress", atoms)
    return D3Terms(float(energy), np.asarray(forces), -voigt_6_to_full_3x3_stress(stress) / units.GPa)


def without_d3(
    label: DFTLabel,
    functional: str,
    damping: str,
    cutoff: float,
    three_body: bool,
    cn_cutoff: float | None = None,
) -> DFTLabel:
    """Return a copy of ``label`` with the D3 terms of its frame subtracted: what hybrid models train on.

    Energy (eV), forces (eV/Å) and, when present, stress (GPa) lose the D3 terms of
    :func:`d3_terms` with these settings (``cutoff`` and ``cn_cutoff`` in Å); its parameters
    gain ``d3_removed``, the settings and the torch-dftd version.  A campaign removes the D3
    it adds back at run time (:func:`with_d3`), so model + D3 reproduces the labels;
    :func:`cp2k_d3_settings` gives instead what a cp2k-dft label's own D3 was.

    Raises
    ------
    ValueError
        When the label failed, already had D3 removed, or says it was computed without
        dispersion.

    """
    if not label.converged or label.energy is None or label.forces is None:
        raise ValueError(f"label {label.frame_id} failed ({label.error}); it has no energy to remove D3 from")
    if "d3_removed" in label.parameters:
        raise ValueError(f"label {label.frame_id} already had D3 removed: {label.parameters['d3_removed']}")
    if label.parameters.get("dispersion") == "none":
        raise ValueError(f"label {label.frame_id} was computed without dispersion; there is no D3 to remove")
    terms = d3_terms(label.frame, functional, damping, cutoff, three_body, cn_cutoff)
    removed = {
        "package": f"torch-dftd {version('torch-dftd')}",
        "functional": functional,
        "damping": damping,
        "cutoff": float(cutoff),
        "cn_cutoff": float(min(cutoff, CN_CUTOFF) if cn_cutoff is None else cn_cutoff),
        "three_body": bool(three_body),
    }
    update = {
        "parameters": {**label.parameters, "d3_removed": removed},
        "energy": label.energy - terms.energy,
        "forces": (np.asarray(label.forces) - terms.forces).tolist(),
    }
    if label.stress is not None:
        update["stress"] = (np.asarray(label.stress) - terms.stress).tolist()
    return label.model_copy(update=update, deep=True)


def cp2k_d3_settings(label: DFTResult) -> dict:
    """Return the D3 settings of a cp2k-dft label as :func:`without_d3` takes them.

    ``functional`` and ``damping`` as torch-dftd names them, ``cutoff`` the pair cutoff in Å
    (twice CP2K's ``R_CUTOFF``, whose default is 20 bohr) and ``three_body`` (CP2K's C9 term,
    on for B97-3c only).  A B97-3c label thus asks for the three-body term, which
    :func:`d3_calculator` refuses: pass ``three_body=False`` to remove its two-body D3 and
    leave its C9 and short-range bond terms in the label.

    Raises
    ------
    ValueError
        For a label of another engine or one computed without dispersion.

    """
    if label.engine != "cp2k-dft":
        raise ValueError(f"D3 settings are known for cp2k-dft labels only, not {label.engine}")
    p = label.parameters
    if p["dispersion"] == "none":
        raise ValueError("the label was computed without dispersion")
    return {
        "functional": TORCH_DFTD_NAMES[p["functional"]],
        "damping": "zero" if p["dispersion"] == "D3" else "bj",
        "cutoff": 2.0 * (p.get("dispersion_cutoff") or CP2K_R_CUTOFF),
        "three_body": p["functional"] == "B97-3c",
    }


class D3Sum(Calculator):
    """An ASE calculator plus D3: energy, free energy (eV), forces (eV/Å), stress (eV/Å^3) summed.

    Every other result of the wrapped calculator is passed on unchanged: the committee's
    ``deviation`` and ``forces_comm`` (eV/Å) stay the members' own, since D3 adds the same
    forces to every member and leaves their spread as it is.  The wrapped calculator is asked
    only for the properties asked of this one, so a committee driven by its first member still
    evaluates the others only when ``deviation`` is asked for; D3 is evaluated once per
    geometry.

    Parameters
    ----------
    calculator
        The calculator to add D3 to.
    d3
        The D3 calculator, see :func:`d3_calculator`.

    """

    def __init__(self, calculator: Calculator, d3: Calculator):
        self.calculator = calculator
        self.d3 = d3
        self.implemented_properties = list(calculator.implemented_properties)
        super().__init__()

    def calculate(
        self,
        atoms=None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Evaluate ``properties`` with the wrapped calculator; add D3 (eV, eV/Å, eV/Å^3) to its results."""
        super().calculate(atoms, properties, system_changes)
        for name in properties:
            self.calculator.get_property(name, self.atoms)
        results = dict(self.calculator.results)
        with _quiet():
            d3_forces = self.d3.get_property("forces", self.atoms)  # one pass: energy, forces, stress
            d3_energy = self.d3.get_property("energy", self.atoms)
            d3_stress = self.d3.get_property("stress", self.atoms) if "stress" in results else None
        for name in ("energy", "free_energy"):
            if name in results:
                results[name] = results[name] + d3_energy
        if "forces" in results:
            results["forces"] = np.asarray(results["forces"]) + d3_forces
        if "stress" in results:
            stress = np.asarray(results["stress"])
            if stress.shape == (3, 3):
                stress = full_3x3_to_voigt_6_stress(stress)
            results["stress"] = stress + d3_stress
        self.results = results


def with_d3(
    calculator: Calculator,
    functional: str,
    damping: str,
    cutoff: float,
    three_body: bool,
    cn_cutoff: float | None = None,
) -> D3Sum:
    """Return ``calculator`` + D3 as one ASE calculator (energy eV, forces eV/Å, stress eV/Å^3).

    The D3 settings are those of :func:`d3_calculator` (``cutoff`` and ``cn_cutoff`` in Å);
    see :class:`D3Sum` for what is summed and what is passed on.
    """
    return D3Sum(calculator, d3_calculator(functional, damping, cutoff, three_body, cn_cutoff))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's warning on the list of arrays torch-dftd builds its cell tensor from."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Creating a tensor from a list of numpy.ndarrays")
        yield
