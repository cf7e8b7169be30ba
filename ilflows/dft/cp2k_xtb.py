"""CP2K GFN1-xTB: single points (energy, forces, analytical stress) and short NVT MD runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from ilflows.dft import DFTSpec, MDRun, finish_label
from ilflows.dft.cp2k_output import OUTPUT, PROJECT, Cp2kOutput, abort_message, md_labels, parse_cp2k_output
from ilflows.execute import EngineError, require_executable, run_command
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import DFTResult
from ilflows.settings import get_settings

# Every value in braces comes from the parameters dict, so the input and the record never drift;
# CP2K reads Python's True/False as logicals.
INPUT_TEMPLATE = """\
&GLOBAL
  PROJECT {project}
  RUN_TYPE {run_type}
  SEED {seed}
&END GLOBAL
&FORCE_EVAL
  METHOD Quickstep
  STRESS_TENSOR {stress_tensor}
  &DFT
    CHARGE {charge}
    &QS
      METHOD {method}
      &xTB
        DO_EWALD {do_ewald}
        CHECK_ATOMIC_CHARGES {check_atomic_charges}
      &END xTB
    &END QS
    &SCF
      SCF_GUESS {scf_guess}
      EPS_SCF {eps_scf}
      MAX_SCF {max_scf}
      &OUTER_SCF
        MAX_SCF {outer_max_scf}
        EPS_SCF {outer_eps_scf}
      &END OUTER_SCF
      &OT
        MINIMIZER {ot_minimizer}
        PRECONDITIONER {ot_preconditioner}
      &END OT
    &END SCF
  &END DFT
  &SUBSYS
    &CELL
{cell}
    &END CELL
    &COORD
      @include coord.xyz
    &END COORD
  &END SUBSYS
  &PRINT
    &FORCES ON
    &END FORCES
    &STRESS_TENSOR {print_stress}
    &END STRESS_TENSOR
  &END PRINT
&END FORCE_EVAL
{motion}"""

# NVT with the CSVR thermostat; positions and forces written every `every` steps
MOTION_TEMPLATE = """\
&MOTION
  &MD
    ENSEMBLE NVT
    STEPS {n_steps}
    TIMESTEP {timestep}
    TEMPERATURE {temperature}
    &THERMOSTAT
      TYPE CSVR
      &CSVR
        TIMECON {thermostat_timecon}
      &END CSVR
    &END THERMOSTAT
  &END MD
  &PRINT
    &TRAJECTORY
      &EACH
        MD {every}
      &END EACH
    &END TRAJECTORY
    &FORCES
      &EACH
        MD {every}
      &END EACH
    &END FORCES
  &END PRINT
&END MOTION
"""


# OT restarted every 10 steps with a fresh preconditioner, up to 20 times: IL boxes of 30-140
# atoms converged to 1e-6 Hartree in 21-35 steps instead of 55-67 with 50-step inner loops (the
# same energy to 1e-8 Hartree and forces to 1e-4 eV/Å), half the time of a label.
INNER_SCF, OUTER_SCF = 10, 20


class Cp2kXtbSpec(DFTSpec):
    """``dft:`` of engine cp2k-xtb (``max_scf``: inner iterations per outer step, default 10)."""

    runs_md: ClassVar[bool] = True
    engine: Literal["cp2k-xtb"] = Field("cp2k-xtb", description="CP2K GFN1-xTB.")
    eps_scf: float = Field(1e-6, gt=0, description="CP2K SCF convergence threshold, Hartree.")


class Cp2kXtb:
    """CP2K GFN1-xTB with Ewald electrostatics on a neutral periodic box."""

    name = "cp2k-xtb"
    section = Cp2kXtbSpec

    def executables(self) -> list[tuple[str, str]]:
        """Return the CP2K command and the settings field that names it."""
        return [(get_settings().cp2k_cmd, "cp2k_cmd")]

    def write_inputs(self, frame: Frame, spec: Cp2kXtbSpec, workdir: Path, md: dict | None = None) -> dict:
        """Write ``input.inp`` and ``coord.xyz`` (Å) in ``workdir``; return the input parameters.

        ``md`` (keys of MOTION_TEMPLATE, plus ``seed``) turns the single point into an MD run.
        """
        parameters = {
            "project": PROJECT,
            "run_type": "MD" if md else "ENERGY_FORCE",
            "seed": 2000,  # CP2K's default; it only matters for MD velocities
            "method": "xTB",
            "charge": 0,
            "do_ewald": True,
            "check_atomic_charges": False,
            "scf_guess": "MOPAC",
            "eps_scf": spec.eps_scf,
            "max_scf": spec.max_scf or INNER_SCF,
            "outer_max_scf": OUTER_SCF,
            "outer_eps_scf": spec.eps_scf,
            "ot_minimizer": "DIIS",
            "ot_preconditioner": "FULL_SINGLE_INVERSE",
            "stress_tensor": "ANALYTICAL" if spec.stress else "NONE",
        }
        # Three vectors rather than ABC so that non-orthogonal cells are kept.
        cell = "\n".join(
            f"      {axis} " + " ".join(f"{x:.10f}" for x in vector)
            for axis, vector in zip("ABC", frame.cell, strict=True)
        )
        parameters.update(md or {})
        motion = MOTION_TEMPLATE.format(**parameters) if md else ""
        print_stress = "ON" if spec.stress else "OFF"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "input.inp").write_text(
            INPUT_TEMPLATE.format(cell=cell, print_stress=print_stress, motion=motion, **parameters)
        )
        (workdir / "coord.xyz").write_text(
            "".join(
                f"{s} {x:.10f} {y:.10f} {z:.10f}\n"
                for s, (x, y, z) in zip(frame.species, frame.positions, strict=True)
            )
        )
        return parameters

    def run_cp2k(self, workdir: Path) -> float:
        """Run CP2K on ``input.inp`` with its output to ``cp2k.out``; return the wall time, s."""
        return run_command(f"{get_settings().cp2k_cmd} -i input.inp", workdir, OUTPUT)

    def parse_output(self, workdir: Path) -> Cp2kOutput:
        """Read the final SCF status, energy, forces and stress from ``cp2k.out``."""
        return parse_cp2k_output((workdir / OUTPUT).read_text(errors="replace"))

    def label(self, frame: Frame, spec: Cp2kXtbSpec, workdir: Path) -> DFTResult:
        """Label one frame; every failure but a missing executable returns ``converged=False``.

        Raises
        ------
        EngineError
            When the CP2K executable is not found.

        """
        workdir = Path(workdir)
        require_executable(get_settings().cp2k_cmd, "cp2k_cmd")
        parameters = self.write_inputs(frame, spec, workdir)
        failed = {"engine": self.name, "parameters": parameters, "converged": False}
        start = time.perf_counter()
        try:
            wall = self.run_cp2k(workdir)
        except EngineError as err:
            abort = abort_message((workdir / OUTPUT).read_text(errors="replace"))
            error = f"cp2k aborted: {abort}" if abort else str(err)
            return DFTResult(**failed, error=error, wall_time=time.perf_counter() - start)
        out = self.parse_output(workdir)
        error = (
            None
            if out.scf_converged
            else f"SCF not converged (max_scf={parameters['max_scf']}, eps_scf={spec.eps_scf})"
        )
        return finish_label(self.name, parameters, frame, spec, wall, out, error)

    def run_md(
        self,
        frame: Frame,
        spec: Cp2kXtbSpec,
        workdir: Path,
        *,
        n_steps: int,
        temperature: float,
        timestep: float,
        every: int,
        seed: int,
        thermostat_timecon: float = 100.0,
    ) -> MDRun:
        """Run xTB NVT MD (CSVR thermostat) from ``frame``, a labelled frame every ``every`` steps.

        Temperature in K, time step and thermostat time constant in fs.  Each written frame
        carries its own xTB energy and forces (CP2K's pos/frc files) and stress; a step whose SCF
        did not converge comes back with ``converged=False``.  A run that aborts keeps the steps
        it finished, with CP2K's reason as the run's error.

        Raises
        ------
        EngineError
            When the CP2K executable is not found.
        """
        workdir = Path(workdir)
        require_executable(get_settings().cp2k_cmd, "cp2k_cmd")
        md = {"n_steps": n_steps, "temperature": temperature, "timestep": timestep, "every": every}
        md.update(seed=seed, thermostat_timecon=thermostat_timecon)
        parameters = self.write_inputs(frame, spec, workdir, md)
        start, error = time.perf_counter(), None
        try:
            self.run_cp2k(workdir)
        except EngineError as err:
            error = str(err)
        wall = time.perf_counter() - start
        text = (workdir / OUTPUT).read_text(errors="replace")
        if error is not None and (abort := abort_message(text)):
            error = f"cp2k aborted: {abort}"
        snapshots = md_labels(self.name, parameters, spec, text, workdir, frame, every, wall / n_steps)
        return MDRun(snapshots, error)
