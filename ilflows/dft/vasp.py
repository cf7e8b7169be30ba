"""VASP single points with paper 1's settings through atomate2's VASP input set and custodian.

Paper 1 (PYR14-BF4 DP-GEN): PAW, PBE or SCAN, DFT-D3, ENCUT 450 eV, EDIFF 1e-6 eV, Gaussian
smearing of 0.05 eV, Gamma point only.  Added here for liquid boxes: no symmetry, no spin,
LREAL Auto beyond 20 atoms (VASP's advice), no charge or wavefunction files.  The sequence is the
CP2K engine's: atomate2's ``StaticSetGenerator`` writes INCAR, KPOINTS, POSCAR and POTCAR, one
custodian run (``VaspJob`` with its standard handlers), then ``vasprun.xml`` is parsed here.
POTCARs are licensed: without pymatgen's ``PMG_VASP_PSP_DIR`` a ``POTCAR.spec`` naming them is
written instead, the parameters say so and the label fails before VASP is started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from ase.units import GPa
from pydantic import Field

from ilflows.dft import DFTSpec, finish_label
from ilflows.execute import pinned_command, require_executable, run_custodian
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import DFTResult
from ilflows.settings import get_settings

POTCAR_FUNCTIONAL = "PBE_54"  # atomate2's default set; SCAN runs on the PBE PAW potentials too


class VaspOutput(NamedTuple):
    """Values read from ``vasprun.xml`` in frame atom order: eV, eV/Å, GPa (pressure sign)."""

    scf_converged: bool
    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    version: str | None = None  # VASP's version from vasprun.xml, e.g. '6.4.2'


def atom_order(frame: Frame) -> list[int]:
    """Frame indices in POSCAR order: grouped by element in order of first appearance.

    Grouping keeps one POTCAR per element however the frame interleaves its molecules.
    """
    first = {s: frame.species.index(s) for s in frame.species}
    return sorted(range(frame.n_atoms), key=lambda i: first[frame.species[i]])


class VaspSpec(DFTSpec):
    """``dft:`` of engine vasp (``max_scf``: NELM, default 50); single points only, no AIMD."""

    engine: Literal["vasp"] = Field("vasp", description="VASP PAW (needs licensed POTCARs).")
    functional: Literal["PBE", "SCAN"] | None = Field(
        None, description="Exchange-correlation functional (default PBE)."
    )
    dispersion: Literal["D3", "D3(BJ)", "none"] | None = Field(
        None,
        description="Grimme D3 correction, zero ('D3') or Becke-Johnson ('D3(BJ)') damping; default D3 "
        "(paper 1).",
    )
    encut: float = Field(450.0, gt=0, description="Plane-wave cutoff ENCUT, eV.")
    ediff: float = Field(1e-6, gt=0, description="Electronic convergence EDIFF, eV.")
    sigma: float = Field(0.05, gt=0, description="Gaussian smearing width SIGMA (ISMEAR 0), eV.")
    max_errors: int = Field(
        3,
        ge=1,
        description="Errors custodian may detect and correct before a label fails; VASP runs at most "
        "this many times.",
    )


class Vasp:
    """VASP PAW single points of a periodic box."""

    name = "vasp"
    section = VaspSpec

    def executables(self) -> list[tuple[str, str]]:
        """Return the VASP command and the settings field that names it."""
        return [(get_settings().vasp_cmd, "vasp_cmd")]

    def incar(self, spec: VaspSpec, n_atoms: int) -> dict:
        """INCAR settings over atomate2's static set (None removes a key)."""
        scan = spec.functional == "SCAN"
        return {
            "GGA": None if scan else "PE",
            "METAGGA": "SCAN" if scan else None,
            "ALGO": "All" if scan else "Fast",
            "IVDW": {"D3": 11, "D3(BJ)": 12, "none": None}[spec.dispersion or "D3"],
            "ENCUT": spec.encut,
            "EDIFF": spec.ediff,
            "NELM": spec.max_scf or 50,
            "ISMEAR": 0,
            "SIGMA": spec.sigma,
            "ISPIN": 1,
            "MAGMOM": None,
            "ISYM": 0,
            "LREAL": "Auto" if n_atoms > 20 else False,
            "NSW": 0,
            "IBRION": -1,
            "ISIF": 2 if spec.stress else 0,
            "LCHARG": False,
            "LWAVE": False,
            "LAECHG": False,
            "LVTOT": False,
            "LORBIT": None,
        }

    def write_inputs(self, frame: Frame, spec: VaspSpec, workdir: Path) -> dict:
        """Write INCAR, KPOINTS (Gamma only), POSCAR and POTCAR or POTCAR.spec; return parameters."""
        from atomate2.vasp.sets.core import StaticSetGenerator
        from pymatgen.core import Lattice, Structure
        from pymatgen.io.vasp import Kpoints
        from pymatgen.io.vasp.inputs import PmgVaspPspDirError

        order = atom_order(frame)
        structure = Structure(
            Lattice(frame.cell),
            [frame.species[i] for i in order],
            [frame.positions[i] for i in order],
            coords_are_cartesian=True,
        )
        generator = StaticSetGenerator(
            user_incar_settings=self.incar(spec, frame.n_atoms),
            user_kpoints_settings=Kpoints.gamma_automatic((1, 1, 1)),
            user_potcar_functional=POTCAR_FUNCTIONAL,
            sort_structure=False,  # order is ours, so forces can be put back in frame order
            auto_ismear=False,
            auto_ispin=False,
            inherit_incar=False,
        )
        try:
            inputs, potcar = generator.get_input_set(structure), "written"
        except (PmgVaspPspDirError, OSError) as err:
            inputs = generator.get_input_set(structure, potcar_spec=True)
            potcar = f"missing ({str(err).splitlines()[0]}); POTCAR.spec names them"
        inputs.write_input(workdir)
        return {
            "functional": spec.functional or "PBE",
            "dispersion": spec.dispersion or "D3",
            "incar": dict(inputs["INCAR"]),
            "kpoints": "gamma 1x1x1",
            "potcar_functional": POTCAR_FUNCTIONAL,
            "potcar_symbols": generator.potcar_symbols,
            "potcar": potcar,
            "max_errors": spec.max_errors,
        }

    def run_vasp(self, workdir: Path, max_errors: int):
        """Run VASP under custodian's VaspJob; see :func:`~ilflows.execute.run_custodian`."""
        from custodian.vasp import handlers as h
        from custodian.vasp.jobs import VaspJob

        handlers = [
            h.VaspErrorHandler(),
            h.UnconvergedErrorHandler(),
            h.NonConvergingErrorHandler(),
            h.PositiveEnergyErrorHandler(),
            h.FrozenJobErrorHandler(),
            h.StdErrHandler(),
        ]
        job = VaspJob(pinned_command(get_settings().vasp_cmd), auto_npar=False, auto_gamma=False)
        return run_custodian(job, handlers, Path(workdir), max_errors)

    def parse_output(self, frame: Frame, workdir: Path) -> VaspOutput:
        """Read the last ionic step of ``vasprun.xml``, back in frame atom order."""
        from pymatgen.io.vasp import Vasprun

        run = Vasprun(
            Path(workdir) / "vasprun.xml", parse_dos=False, parse_eigen=False, parse_potcar_file=False
        )
        step = run.ionic_steps[-1]
        # vasprun's e_fr_energy holds + PV when PSTRESS is set; the free energy matches the forces.
        pv = run.parameters.get("PSTRESS", 0.0) * 0.1 * GPa * run.final_structure.volume
        forces = np.empty((frame.n_atoms, 3))
        forces[atom_order(frame)] = step["forces"]
        stress = np.array(step["stress"]) * 0.1 if "stress" in step else None  # kbar -> GPa
        energy = step["e_fr_energy"] - pv
        return VaspOutput(run.converged_electronic, energy, forces, stress, run.vasp_version)

    def label(self, frame: Frame, spec: VaspSpec, workdir: Path) -> DFTResult:
        """Label one frame; every failure but a missing executable returns ``converged=False``.

        Raises
        ------
        EngineError
            When the VASP executable is not found.

        """
        workdir = Path(workdir)
        require_executable(get_settings().vasp_cmd, "vasp_cmd")
        parameters = self.write_inputs(frame, spec, workdir)
        failed = {"engine": self.name, "parameters": parameters, "converged": False}
        if parameters["potcar"] != "written":
            return DFTResult(**failed, error=f"POTCAR {parameters['potcar']}", wall_time=0.0)
        wall, parameters["custodian"], failure = self.run_vasp(workdir, spec.max_errors)
        try:
            out = self.parse_output(frame, workdir)
        except Exception as err:  # a missing or truncated vasprun.xml, whatever its parser raises
            error = f"custodian: {failure}" if failure else f"vasprun.xml unreadable: {err}"
            return DFTResult(**failed, error=error, wall_time=wall)
        error = None
        if not out.scf_converged:
            error = f"SCF not converged (NELM={parameters['incar']['NELM']}, EDIFF={spec.ediff} eV)"
        elif failure:
            error = f"custodian: {failure}"
        return finish_label(self.name, parameters, frame, spec, wall, out, error)
