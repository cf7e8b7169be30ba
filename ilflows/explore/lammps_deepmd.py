"""LAMMPS with ``pair_style deepmd``: NVT/NPT driven by model 0, ensemble deviation per frame."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from ase.data import atomic_masses, atomic_numbers
from pydantic import Field

from ilflows.execute import EngineError, require_executable, run_command
from ilflows.explore import PDAMP_STEPS, TDAMP_STEPS, ExploreSpec, model_devi
from ilflows.schemas.control import DispersionSpec
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import MDResult, ModelFile, Trajectory
from ilflows.settings import get_settings
from ilflows.software import software


class LammpsDeepmdSpec(ExploreSpec):
    """``explore:`` with LAMMPS ``pair_style deepmd``: DeePMD models only, no D3, no modifiers."""

    drives: ClassVar[frozenset[str] | None] = frozenset({"deepmd"})
    engine: Literal["lammps-deepmd"] = Field(
        "lammps-deepmd", description="LAMMPS pair_style deepmd and its model_devi output."
    )


class LammpsDeepmd:
    """Explore with LAMMPS: ``write_inputs``, ``run_lammps``, then parse dump and deviations."""

    name = "lammps-deepmd"
    section = LammpsDeepmdSpec

    def executables(self) -> list[tuple[str, str]]:
        """Return the ``lmp`` command and its settings field."""
        return [(get_settings().lmp_cmd, "lmp_cmd")]

    def explore(
        self,
        models: list[ModelFile],
        start: Frame,
        type_map: list[str],
        spec: LammpsDeepmdSpec,
        seed: int,
        workdir: Path,
        dispersion: DispersionSpec | None = None,
        energy_deviation: bool = False,
    ) -> MDResult:
        """Run ``spec.n_steps`` of MD from ``start``, recording every ``spec.frame_every`` steps.

        The force and virial deviations are LAMMPS' (``model_devi.out``); LAMMPS writes no
        energy deviation, so with ``energy_deviation`` every member evaluates the recorded frames
        afterwards (:func:`energy_deviations`).

        Raises
        ------
        EngineError
            When LAMMPS fails or its frames and deviations do not cover steps
            0, frame_every, ..., n_steps one-to-one (e.g. the MD blew up).

        """
        if dispersion is not None:
            raise ValueError(
                "lammps-deepmd adds no D3 to its models; explore hybrid MLP + D3 with engine ase"
            )
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        parameters = write_inputs(models, start, type_map, spec, seed, workdir)
        wall_time = run_lammps(workdir)
        steps, positions, cells = parse_dump(workdir / "traj.dump")
        devi = model_devi.read(workdir / "model_devi.out")
        expected = list(range(0, spec.n_steps + 1, spec.frame_every))
        if steps != expected or devi.steps != expected:
            raise EngineError(
                f"LAMMPS in {workdir} wrote {len(steps)} frames and {len(devi.steps)} deviations, "
                f"expected {len(expected)} (steps 0..{expected[-1]} every {spec.frame_every}); "
                "the MD probably blew up, see lammps.log"
            )
        trajectory = Trajectory(species=list(start.species), steps=steps, positions=positions, cells=cells)
        energies = energy_deviations(models, trajectory, workdir) if energy_deviation else None
        return MDResult.of_run(
            self.name,
            spec,
            parameters,
            trajectory,
            deviations=devi.max_devi_f,
            virial_deviations=devi.max_devi_v,
            energy_deviations=energies,
            wall_time=wall_time,
            software=software(("lammps", "deepmd-kit", "tensorflow", "tensorflow-cpu")),
        )


def write_inputs(
    models: list[ModelFile],
    start: Frame,
    type_map: list[str],
    spec: LammpsDeepmdSpec,
    seed: int,
    workdir: Path,
) -> dict:
    """Write the models, ``conf.lmp`` and ``in.lammps``; return every MD parameter used."""
    if not 0 < seed < 2**31:
        raise ValueError(f"LAMMPS velocity seeds are positive 31-bit integers, got {seed}")
    unknown = set(start.species) - set(type_map)
    if unknown:
        raise ValueError(f"start frame has elements {sorted(unknown)} not in type_map {type_map}")
    names = [model.write(workdir / f"graph.{i:03d}.pb").name for i, model in enumerate(models)]
    (workdir / "conf.lmp").write_text(lammps_data(start, type_map))
    dt_ps = spec.timestep / 1000.0
    tdamp, pdamp = TDAMP_STEPS * dt_ps, PDAMP_STEPS * dt_ps
    T, P, every = spec.temperature, spec.pressure, spec.frame_every
    if spec.ensemble == "nvt":
        fix = f"fix md all nvt temp {T} {T} {tdamp}"
    else:
        fix = f"fix md all npt temp {T} {T} {tdamp} iso {P} {P} {pdamp}"
    lines = [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        "read_data conf.lmp",
        f"pair_style deepmd {' '.join(names)} out_freq {every} out_file model_devi.out",
        f"pair_coeff * * {' '.join(type_map)}",
        f"timestep {dt_ps}",
        "thermo_style custom step temp pe ke etotal press vol",
        f"thermo {every}",
        f"dump traj all custom {every} traj.dump id type x y z",
        "dump_modify traj sort id format float %.17g",
        f"velocity all create {T} {seed} dist gaussian",
        fix,
        f"run {spec.n_steps}",
    ]
    (workdir / "in.lammps").write_text("\n".join(lines) + "\n")
    return {
        **spec.model_dump(),
        "seed": seed,
        "type_map": list(type_map),
        "tdamp_ps": tdamp,
        "pdamp_ps": pdamp if spec.ensemble == "npt" else None,
        "models": [model.sha256 for model in models],
    }


def lammps_data(frame: Frame, type_map: list[str]) -> str:
    """Return a LAMMPS data file (atomic, metal units) of ``frame``, types in ``type_map`` order.

    Raises
    ------
    ValueError
        When the cell is not in LAMMPS's restricted triclinic form (rows a, b, c with
        a along x and b in the xy plane, positive diagonal).

    """
    cell = np.asarray(frame.cell, dtype=float)
    scale = np.abs(cell).max()
    if np.abs(cell[[0, 0, 1], [1, 2, 2]]).max() > 1e-10 * scale or (np.diag(cell) <= 0).any():
        raise ValueError(
            f"cell {cell.tolist()} is not LAMMPS-ready: a must lie along x and b in the xy plane "
            "(lower-triangular rows, positive diagonal); rotate the frame first"
        )
    (lx, _, _), (xy, ly, _), (xz, yz, lz) = cell
    lines = [
        "ilflows frame (units metal, atom_style atomic)",
        "",
        f"{frame.n_atoms} atoms",
        f"{len(type_map)} atom types",
        "",
        f"0 {lx:.17g} xlo xhi",
        f"0 {ly:.17g} ylo yhi",
        f"0 {lz:.17g} zlo zhi",
    ]
    if xy or xz or yz:
        lines.append(f"{xy:.17g} {xz:.17g} {yz:.17g} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{i + 1} {atomic_masses[atomic_numbers[el]]:.17g}" for i, el in enumerate(type_map)]
    lines += ["", "Atoms # atomic", ""]
    for i, (el, (x, y, z)) in enumerate(zip(frame.species, frame.positions, strict=True)):
        lines.append(f"{i + 1} {type_map.index(el) + 1} {x:.17g} {y:.17g} {z:.17g}")
    return "\n".join(lines) + "\n"


def run_lammps(workdir: Path) -> float:
    """Run ``lmp -in in.lammps`` in ``workdir`` (screen to ``lammps.log``); return wall time, s."""
    lmp = get_settings().lmp_cmd
    require_executable(lmp, "lmp_cmd")
    return run_command([*shlex.split(lmp), "-in", "in.lammps", "-log", "none"], workdir, "lammps.log")


def parse_dump(path: Path) -> tuple[list[int], list, list]:
    """Read a ``custom id type x y z`` dump sorted by id.

    Returns
    -------
    tuple
        Steps, positions (n_frames, n_atoms, 3) and cells (n_frames, 3, 3) as lists, Å,
        with each frame's origin moved to (0, 0, 0).

    """
    lines = Path(path).read_text().splitlines() if Path(path).exists() else []
    steps, positions, cells = [], [], []
    i = 0
    while i < len(lines):
        n_atoms = int(lines[i + 3])
        bounds = np.array([line.split() for line in lines[i + 5 : i + 8]], dtype=float)
        cell, origin = _cell_from_bounds(bounds)
        columns = lines[i + 8].split()[2:]
        atoms = np.array([line.split() for line in lines[i + 9 : i + 9 + n_atoms]], dtype=float)
        xyz = atoms[:, [columns.index(c) for c in ("x", "y", "z")]] - origin
        steps.append(int(lines[i + 1]))
        positions.append(xyz.tolist())
        cells.append(cell.tolist())
        i += 9 + n_atoms
    return steps, positions, cells


def _cell_from_bounds(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell rows and origin from a dump's BOX BOUNDS block (bounding box plus tilts)."""
    xy, xz, yz = bounds[:, 2] if bounds.shape[1] == 3 else (0.0, 0.0, 0.0)
    xlo = bounds[0, 0] - min(0.0, xy, xz, xy + xz)
    xhi = bounds[0, 1] - max(0.0, xy, xz, xy + xz)
    ylo, yhi = bounds[1, 0] - min(0.0, yz), bounds[1, 1] - max(0.0, yz)
    zlo, zhi = bounds[2, :2]
    cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
    return cell, np.array([xlo, ylo, zlo])


def energy_deviations(models: list[ModelFile], trajectory: Trajectory, workdir: Path) -> list[float]:
    """DeePMD's ``devi_e`` of each recorded frame: every member evaluates it again, eV/atom."""
    from ilflows.explore.committee import CommitteeCalculator
    from ilflows.select import energy_deviation

    paths = [m.write(Path(workdir) / f"devi_e.{k:03d}.pb") for k, m in enumerate(models)]
    calc = CommitteeCalculator(paths, drive="first")
    out = []
    for k in range(len(trajectory.steps)):
        atoms = trajectory.frame(k).to_ase()
        calc.calculate(atoms, ["energies_comm"])
        out.append(energy_deviation(calc.results["energies_comm"], len(atoms)))
    return out
