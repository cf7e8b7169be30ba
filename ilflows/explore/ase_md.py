"""ASE molecular dynamics with a committee (MACE, DeePMD or both): NVT/NPT driven by model 0.

The same run as :mod:`ilflows.explore.lammps_deepmd`, with ASE integrators in place of LAMMPS
fixes and :class:`~ilflows.explore.committee.CommitteeCalculator` in place of
``pair_style deepmd``:

* NVT: Bussi's stochastic velocity rescaling (CSVR).  Like LAMMPS's Nosé-Hoover ``fix nvt``
  it samples the canonical ensemble, but it relaxes the kinetic energy of a freshly packed,
  hot or cold box exponentially instead of with Nosé-Hoover's slow temperature oscillations,
  and it is the thermostat of the initial xTB MD (``initial.md``).  ASE's Langevin would add
  friction and noise to every atom and so perturb the dynamics far more.
* NPT: ASE's isotropic Martyna-Tobias-Klein integrator (``IsotropicMTKNPT``), the equations
  LAMMPS's ``fix npt ... iso`` integrates (Nosé-Hoover chains on the particles and on the
  volume) with the same damping times, so both explorers sample the same ensemble and the
  cell responds as slowly (1000 steps, LAMMPS's recommended barostat time).  ``NPTBerendsen``
  would be as robust far from equilibrium but suppresses the volume fluctuations that
  exploration should visit.

Thermostat and barostat times are those of the LAMMPS explorer: 100 and 1000 time steps.
Recorded frames go to ``traj.extxyz`` (ASE's MD state: unwrapped positions, momenta, model 0's
energy, forces and stress) and ``model_devi.out`` (DeePMD's columns,
:mod:`ilflows.explore.model_devi`) as they are made, and thermodynamics to ``md.log``, so a
run that blows up leaves its frames in ``workdir`` as a LAMMPS run leaves its dump; like that
explorer, it then raises :class:`EngineError`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar, Literal

import ase.io
import numpy as np
from ase import Atoms, units
from ase.md.bussi import Bussi
from ase.md.logger import MDLogger
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import IsotropicMTKNPT
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from pydantic import Field

from ilflows.execute import EngineError, torch_threads
from ilflows.explore import MODIFIERS, PDAMP_STEPS, TDAMP_STEPS, ExploreSpec, model_devi
from ilflows.geometry import volume_at_density
from ilflows.schemas.control import DispersionSpec
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import MDResult, ModelFile, Trajectory
from ilflows.select import energy_deviation as energy_deviation_of
from ilflows.select import force_deviations, virial_deviation
from ilflows.software import software


class AseSpec(ExploreSpec):
    """``explore:`` with ASE MD: any model families, D3 on top, ramps and a deviation stop."""

    modifiers: ClassVar[frozenset[str]] = frozenset(MODIFIERS)
    adds_dispersion: ClassVar[bool] = True
    engine: Literal["ase"] = Field(
        "ase", description="ASE MD with a committee of any families (MACE and DeePMD) in this process."
    )


class AseCommittee:
    """Explore with ASE and a committee of MACE and/or DeePMD models; no external program is run."""

    name = "ase"
    section = AseSpec

    def executables(self) -> list[tuple[str, str]]:
        """Return no programs: the MD runs in this Python process."""
        return []

    def explore(
        self,
        models: list[ModelFile],
        start: Frame,
        type_map: list[str],
        spec: AseSpec,
        seed: int,
        workdir: Path,
        dispersion: DispersionSpec | None = None,
        energy_deviation: bool = True,
    ) -> MDResult:
        """Run ``spec.n_steps`` of MD from ``start``, recording every ``spec.frame_every`` steps.

        Frames are recorded at steps 0, frame_every, ..., with positions wrapped into the
        cell, and each frame's deviations are the committee's there: force, virial and energy
        (all evaluated at once, whatever ``energy_deviation`` asks), written to model_devi.out
        as DeePMD writes them.  With
        ``dispersion`` the MD runs on the hybrid model + D3; D3 moves every member's forces
        alike, so the deviation is the committee's own.

        Raises
        ------
        EngineError
            When the MD blows up (non-finite positions, forces or stress); the frames made
            until then are in ``workdir``.
        ValueError
            When ``start`` has elements outside ``type_map`` or the seed is negative.

        """
        # MACE loads only when MD runs, not when the farm asks for executables
        from ilflows.explore.committee import CommitteeCalculator

        if seed < 0:
            raise ValueError(f"MD velocity seeds are non-negative integers, got {seed}")
        unknown = set(start.species) - set(type_map)
        if unknown:
            raise ValueError(f"start frame has elements {sorted(unknown)} not in type_map {type_map}")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        # the suffix tells the committee a model's family (.pb: DeePMD, .model: MACE)
        paths = [m.write(workdir / f"model.{i:03d}{Path(m.name).suffix}") for i, m in enumerate(models)]
        atoms = Atoms(start.species, positions=start.positions, cell=start.cell, pbc=True)
        calc = CommitteeCalculator(paths, drive="first")
        atoms.calc = calc
        if dispersion:  # hybrid MLP + D3: the same D3 forces for every member, deviation unchanged
            from ilflows.dispersion import with_d3

            atoms.calc = with_d3(calc, **dispersion.model_dump(), three_body=False)
        rng = np.random.default_rng(seed)
        start_temperature = spec.temperature_ramp.start if spec.temperature_ramp else spec.temperature
        thermalize_momenta(atoms, start_temperature, exact_temperature=True, rng=rng)
        Stationary(atoms)  # no drift of the whole box, as LAMMPS's ``velocity create`` (mom yes)
        dyn, parameters = _dynamics(atoms, spec, rng)
        parameters.update(seed=seed, type_map=list(type_map), models=[model.sha256 for model in models])
        parameters["dispersion"] = dispersion.model_dump() if dispersion else None

        steps, positions, cells, deviations, energies, virials = [], [], [], [], [], []
        traj_file, devi_file = workdir / "traj.extxyz", workdir / "model_devi.out"
        traj_file.unlink(missing_ok=True)
        devi_file.write_text(model_devi.HEADER)
        start_time = time.perf_counter()

        def record() -> None:
            devi_f = force_deviations(calc.get_property("forces_comm", atoms))
            n = len(atoms)
            devi_e = energy_deviation_of(calc.results["energies_comm"], n)
            devi_v = (np.nan, np.nan, np.nan)
            if "stresses_comm" in calc.results:  # ASE's stress is minus the virial over the volume
                devi_v = virial_deviation(-calc.results["stresses_comm"] * atoms.get_volume(), n)
            steps.append(dyn.nsteps)
            positions.append(atoms.get_positions(wrap=True).tolist())
            cells.append(atoms.cell.array.tolist())
            deviations.append(devi_f[0])
            energies.append(devi_e)
            virials.append(devi_v[0])
            ase.io.write(traj_file, atoms, format="extxyz", append=True)
            with devi_file.open("a") as out:
                out.write(model_devi.row(dyn.nsteps, devi_v, devi_f, devi_e))
            if spec.stop_deviation is not None and devi_f[0] >= spec.stop_deviation:
                raise _DeviationReachedError

        if spec.temperature_ramp or spec.density_ramp:  # first, so a frame records its step's density
            dyn.attach(_Modifier(dyn, atoms, spec), interval=1)
        dyn.attach(record, interval=spec.frame_every)
        stopped_at = None
        try:
            with (
                torch_threads(),
                MDLogger(dyn, atoms, str(workdir / "md.log"), stress=spec.ensemble == "npt") as logger,
            ):
                dyn.attach(logger, interval=spec.frame_every)
                dyn.run(spec.n_steps)
        except _DeviationReachedError:
            stopped_at = steps[-1]
        except FloatingPointError as err:
            raise EngineError(
                f"ASE MD in {workdir} blew up after {dyn.nsteps} steps ({err}); the {len(steps)} frames "
                "made before are in traj.extxyz and model_devi.out, see md.log"
            ) from err
        trajectory = Trajectory(species=list(start.species), steps=steps, positions=positions, cells=cells)
        wall_time = time.perf_counter() - start_time
        return MDResult.of_run(
            self.name,
            spec,
            parameters,
            trajectory,
            deviations=deviations,
            energy_deviations=energies,
            virial_deviations=None if np.isnan(virials).any() else virials,
            wall_time=wall_time,
            stopped_at=stopped_at,
            software=software(("ase", "mace-torch", "torch", "deepmd-kit", "tensorflow", "tensorflow-cpu")),
        )


class _DeviationReachedError(Exception):
    """Raised by the recorder when a frame's deviation reaches ``explore.stop_deviation``."""


class _Modifier:
    """Drive the thermostat temperature and the box density along the spec's ramps, every step.

    The density is reached by scaling the cell and positions isotropically, as LAMMPS's
    ``fix deform ... scale`` would; the Bussi thermostat's target kinetic energy follows the
    temperature ramp.
    """

    def __init__(self, dyn: MolecularDynamics, atoms: Atoms, spec: AseSpec):
        self.dyn, self.atoms, self.spec = dyn, atoms, spec
        self.t_end = spec.n_steps * spec.timestep
        self.mass = atoms.get_masses().sum()  # amu

    def __call__(self) -> None:
        t = self.dyn.nsteps * self.spec.timestep
        if ramp := self.spec.temperature_ramp:
            self.dyn.temp = ramp.at(t, self.t_end) * units.kB
            self.dyn.target_kinetic_energy = 0.5 * self.dyn.temp * self.dyn.ndof
        if ramp := self.spec.density_ramp:
            volume = volume_at_density(self.mass, ramp.at(t, self.t_end))
            scale = (volume / self.atoms.get_volume()) ** (1 / 3)
            self.atoms.set_cell(self.atoms.cell.array * scale, scale_atoms=True)


def _dynamics(atoms: Atoms, spec: AseSpec, rng: np.random.Generator) -> tuple[MolecularDynamics, dict]:
    """Return the integrator of ``spec.ensemble`` and every MD parameter it uses."""
    dt_fs = spec.timestep
    tdamp_fs, pdamp_fs = TDAMP_STEPS * dt_fs, PDAMP_STEPS * dt_fs
    parameters = {**spec.model_dump(), "tdamp_ps": tdamp_fs / 1000.0, "drive": "model 0"}
    if spec.ensemble == "nvt":
        start = spec.temperature_ramp.start if spec.temperature_ramp else spec.temperature
        dyn = Bussi(atoms, dt_fs * units.fs, start, taut=tdamp_fs * units.fs, rng=rng)
        return dyn, {**parameters, "thermostat": "bussi", "barostat": None, "pdamp_ps": None}
    dyn = IsotropicMTKNPT(
        atoms,
        dt_fs * units.fs,
        temperature_K=spec.temperature,
        pressure_au=spec.pressure * units.bar,
        tdamp=tdamp_fs * units.fs,
        pdamp=pdamp_fs * units.fs,
    )
    npt = {"thermostat": "nose-hoover-chain", "barostat": "mtk-iso", "pdamp_ps": pdamp_fs / 1000.0}
    return dyn, {**parameters, **npt}
