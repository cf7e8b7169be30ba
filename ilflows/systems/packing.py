"""Cubic boxes of ions packed with Packmol, and the initial (nEQ) frames built from them.

A packed frame lays its molecules out in the order of :data:`~ilflows.systems.ions.ION_LIBRARY`
(PYR14, BMIM, Li, BF4, TFSI), all molecules of one ion together and each molecule's atoms
contiguous and in the order of its xyz template, whatever the order of ``system.ions``;
:func:`topology` gives the atom range of every molecule.

Packmol (20.14, as packaged by Debian) knows no periodic boundaries, so every atom is
packed inside ``[tolerance/2, L - tolerance/2]`` (to Packmol's ~0.01 Å precision): an atom
and the periodic image of any other molecule's atom are then at least ``tolerance`` apart.

Seeds: the frame at position ``index`` of the initial set uses ``initial.seed + index``
(Packmol's seed for packed boxes, the rattle seed for rattled copies). Start boxes for
the MD walkers continue the same numbering after the initial set (see
:func:`start_frames`), so no two frames of a campaign share an index or a seed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ilflows.execute import EngineError, require_executable, run_command
from ilflows.geometry import volume_at_density
from ilflows.schemas.frames import Frame, FrameOrigin
from ilflows.schemas.inputs import MDFramesSpec, SystemSpec
from ilflows.settings import get_settings
from ilflows.systems.ions import ION_LIBRARY, load_ion, molar_mass

if TYPE_CHECKING:  # the campaign spec validates with these modules
    from ilflows.schemas.campaign import CampaignSpec


class PackingError(EngineError):
    """Packmol found no packing; the message says which spec values to change."""


def ordered_ions(system: SystemSpec) -> list[tuple[str, int]]:
    """(ion name, count) of ``system.ions`` in the library's order, the order of packed frames."""
    return [(name, system.ions[name]) for name in ION_LIBRARY if name in system.ions]


def topology(system: SystemSpec) -> list[tuple[str, range]]:
    """Ion name and atom index range of each molecule of a frame packed for ``system``."""
    out, start = [], 0
    for name, count in ordered_ions(system):
        size = len(load_ion(name))
        for _ in range(count):
            out.append((name, range(start, start + size)))
            start += size
    return out


def species(system: SystemSpec) -> list[str]:
    """Chemical symbol of each atom of a box packed for ``system``, in :func:`topology` order."""
    return [s for name, n in ordered_ions(system) for s in _symbols(name) * n]


@lru_cache
def _symbols(name: str) -> tuple[str, ...]:
    # system_of compares every guarded frame with every composition: read each ion file once
    return tuple(load_ion(name).get_chemical_symbols())


def elements(system: SystemSpec) -> list[str]:
    """Chemical elements of ``system``'s ions, sorted by atomic number."""
    symbols = {s for name in system.ions for s in load_ion(name).get_chemical_symbols()}
    return sorted(symbols, key=atomic_numbers.__getitem__)


def check_composition(system: SystemSpec) -> None:
    """Raise a one-line :class:`ValueError` naming ``system.ions`` if the composition is unusable.

    The ions must be in the library, every count positive and the box electroneutral.
    """
    unknown = [name for name in system.ions if name not in ION_LIBRARY]
    if unknown:
        known = ", ".join(sorted(ION_LIBRARY))
        raise ValueError(f"system.ions: unknown ion {unknown[0]!r}; known: {known}")
    bad = {name: n for name, n in system.ions.items() if n <= 0}
    if bad:
        raise ValueError(
            f"system.ions: counts must be positive, got {bad}; drop the ion or give a count >= 1"
        )
    charge = sum(ION_LIBRARY[name].charge * n for name, n in system.ions.items())
    if charge:
        parts = ", ".join(f"{n} {name} ({ION_LIBRARY[name].charge:+d})" for name, n in ordered_ions(system))
        raise ValueError(
            f"system.ions: the box has a net charge of {charge:+d} e ({parts}); "
            "change the counts so that charges cancel"
        )


def box_edge(system: SystemSpec, density: float) -> float:
    """Edge, Å, of the cubic box holding the ions of ``system.ions`` at ``density`` g/cm^3."""
    mass = sum(n * molar_mass(name) for name, n in system.ions.items())
    return volume_at_density(mass, density) ** (1 / 3)


def molecule_extent(atoms: Atoms) -> float:
    """Largest interatomic distance of a molecule, Å."""
    return float(atoms.get_all_distances().max()) if len(atoms) > 1 else 0.0


def check_fits(system: SystemSpec, density: float) -> None:
    """Raise :class:`ValueError` when the largest ion cannot fit in the packable region.

    The packable region of the box is ``L - tolerance`` wide (see the module docstring).
    """
    edge = box_edge(system, density)
    extent, name = max((molecule_extent(load_ion(n)), n) for n in system.ions)
    if edge - system.tolerance <= extent:
        n_ions = sum(system.ions.values())
        raise ValueError(
            f"system.density/system.ions: {n_ions} ions at {density:.4g} g/cm^3 "
            f"make a {edge:.2f} Å box, which less system.tolerance ({system.tolerance} Å) "
            f"cannot hold {name} ({extent:.2f} Å across); add ions or lower the density"
        )


def run_packmol(workdir: Path) -> float:
    """Run Packmol on ``workdir/packmol.inp`` (its standard input); return its wall time, s.

    Raises
    ------
    PackingError
        When Packmol does not report "Success!"; the input and ``packmol.log`` stay in
        ``workdir``.

    """
    command = get_settings().packmol_cmd
    require_executable(command, "packmol_cmd")
    advice = (
        f"packmol found no packing in {workdir} (see packmol.log); lower the density "
        "(system.density or initial.density_factors) or system.tolerance, or add ions (system.ions)"
    )
    try:
        wall = run_command(command, workdir, "packmol.log", stdin=workdir / "packmol.inp")
    except EngineError as err:  # Packmol exits 173 when it gives up
        raise PackingError(advice) from err
    if "Success!" not in (workdir / "packmol.log").read_text(errors="replace"):
        raise PackingError(advice)
    return wall


def _write_xyz(path: Path, atoms: Atoms) -> None:
    lines = [str(len(atoms)), atoms.get_chemical_formula()]
    for symbol, (x, y, z) in zip(atoms.symbols, atoms.positions, strict=True):
        lines.append(f"{symbol} {x:.8f} {y:.8f} {z:.8f}")
    path.write_text("\n".join(lines) + "\n")


def _superpose(template: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rigidly move ``template`` onto ``target`` (Kabsch); return the moved coordinates.

    Packmol only rotates and translates molecules but writes 6 decimals; refitting the exact
    template keeps each molecule's internal geometry exact.
    """
    p = template - template.mean(axis=0)
    q_mean = target.mean(axis=0)
    u, _, vt = np.linalg.svd(p.T @ (target - q_mean))
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return p @ rotation + q_mean


def pack_box(system: SystemSpec, density: float, seed: int, workdir: Path) -> Frame:
    """Pack the ions of ``system.ions`` into a cubic box at ``density`` g/cm^3.

    Parameters
    ----------
    system
        Composition and Packmol tolerance.
    density
        Target density, g/cm^3; the box edge is chosen so that mass/volume equals it.
    seed
        Packmol's random seed, >= 0 (Packmol reads -1 as "seed from the clock").
    workdir
        Folder for Packmol's input, molecule files, output and log (created if missing).

    Returns
    -------
    Frame
        Molecules in the order of :func:`topology` (library order of the ions), each
        molecule's atoms contiguous and in template order.

    """
    if seed < 0:
        raise ValueError(f"packmol seed must be >= 0, got {seed}; use a non-negative initial.seed")
    check_composition(system)
    check_fits(system, density)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ions = [(name, load_ion(name), count) for name, count in ordered_ions(system)]
    edge, tol = box_edge(system, density), system.tolerance
    lines = [f"tolerance {tol}", f"seed {seed}", "filetype xyz", "output packed.xyz"]
    for name, atoms, count in ions:
        _write_xyz(workdir / f"{name}.xyz", atoms)
        lines += [
            f"structure {name}.xyz",
            f"  number {count}",
            f"  inside cube {tol / 2} {tol / 2} {tol / 2} {edge - tol}",
            "end structure",
        ]
    (workdir / "packmol.inp").write_text("\n".join(lines) + "\n")
    run_packmol(workdir)

    out = (workdir / "packed.xyz").read_text().splitlines()[2:]
    packed = np.array([[float(x) for x in line.split()[1:4]] for line in out if line.strip()])
    species, positions, start = [], [], 0
    for _, atoms, count in ions:
        for _ in range(count):
            stop = start + len(atoms)
            positions.append(_superpose(atoms.positions, packed[start:stop]))
            species += atoms.get_chemical_symbols()
            start = stop
    return Frame(
        species=species,
        positions=np.concatenate(positions).tolist(),
        cell=(np.eye(3) * edge).tolist(),
    )


def _origin(spec: CampaignSpec, index: int, **fields) -> FrameOrigin:
    return FrameOrigin(
        campaign=spec.name,
        stage="initial",
        equilibrated=False,
        index=index,
        seed=spec.initial.seed + index,
        **fields,
    )


def initial_frames(spec: CampaignSpec, workdir: Path) -> list[tuple[Frame, FrameOrigin]]:
    """Build the initial nEQ set: packed boxes over ``initial.density_factors`` plus rattled copies.

    For each composition of ``system`` and each density factor, ``initial.boxes_per_density``
    boxes are packed at that composition's density times the factor, each followed in the list
    by its ``initial.rattled_copies`` rattled copies (Gaussian displacements of
    ``initial.rattle_stdev`` Å per coordinate).  Each origin's ``index`` is its position in the
    returned list; Packmol runs in ``workdir/packmol-<index>``.
    """
    init = spec.initial
    frames: list[tuple[Frame, FrameOrigin]] = []
    for k, system in enumerate(spec.system):
        for factor in init.density_factors:
            for _ in range(init.boxes_per_density):
                index = len(frames)
                packed = _origin(spec, index, method="packmol", density_factor=factor, system=k)
                box = pack_box(system, system.density * factor, packed.seed, workdir / f"packmol-{index}")
                frames.append((box, packed))
                for _ in range(init.rattled_copies):
                    rattled = _origin(
                        spec,
                        len(frames),
                        method="rattle",
                        density_factor=factor,
                        rattle_stdev=init.rattle_stdev,
                        parent=packed.frame_id,
                        system=k,
                    )
                    atoms = box.to_ase()
                    atoms.rattle(stdev=init.rattle_stdev, seed=rattled.seed)
                    frames.append((Frame.from_ase(atoms), rattled))
    return frames


def n_initial_frames(spec: CampaignSpec) -> int:
    """Return how many frames :func:`initial_frames` builds for ``spec``."""
    init = spec.initial
    return len(spec.system) * len(init.density_factors) * init.boxes_per_density * (1 + init.rattled_copies)


def start_frames(spec: CampaignSpec, workdir: Path) -> list[tuple[Frame, FrameOrigin]]:
    """Pack ``explore.n_walkers`` boxes per composition for the walkers, or read ``explore.starts``.

    Their indices continue after the initial set (``n_initial_frames(spec) + i``), so their
    frame_ids and seeds never collide with those of :func:`initial_frames`; calling this again
    with the same spec returns the same boxes under the same ids.
    """
    index = n_initial_frames(spec)
    if spec.explore.starts:
        from ilflows.systems.starts import read_start

        read = [read_start(path, spec) for path in spec.explore.starts]
        return [
            (frame, _origin(spec, index + i, method="file", system=k)) for i, (k, frame) in enumerate(read)
        ]
    frames = []
    for k, system in enumerate(spec.system):
        for _ in range(spec.explore.n_walkers):
            origin = _origin(spec, index, method="packmol", density_factor=1.0, system=k)
            box = pack_box(system, system.density, origin.seed, workdir / f"packmol-{index}")
            frames.append((box, origin))
            index += 1
    return frames


def md_boxes(
    spec: CampaignSpec, workdir: Path, stage: str = "initial"
) -> list[tuple[MDFramesSpec, Frame, FrameOrigin]]:
    """Pack the boxes of ``initial.md`` (or ``validation.md``): (run, box, origin), per density factor.

    Each entry packs its boxes for every composition.  Training MD boxes take the indices and
    seeds after the walkers' starting boxes; validation MD boxes those after the validation
    boxes, so ids and seeds never collide.
    """
    if stage == "initial":
        runs, seed = spec.initial.md, spec.initial.seed
        index = n_initial_frames(spec) + len(spec.system) * spec.explore.n_walkers
    else:
        val = spec.validation
        runs, index, seed = (
            val.md,
            len(spec.system) * len(val.density_factors) * val.boxes_per_density,
            val.seed,
        )
    boxes = []
    for run in runs:
        for k, system in enumerate(spec.system):
            for factor in run.density_factors:
                for _ in range(run.boxes):
                    origin = FrameOrigin(
                        campaign=spec.name,
                        stage=stage,
                        method="packmol",
                        equilibrated=False,
                        index=index,
                        seed=seed + index,
                        density_factor=factor,
                        system=k,
                    )
                    density = system.density * factor
                    box = pack_box(system, density, origin.seed, workdir / f"packmol-{stage}-{index}")
                    boxes.append((run, box, origin))
                    index += 1
    return boxes


def validation_frames(spec: CampaignSpec, workdir: Path) -> list[tuple[Frame, FrameOrigin]]:
    """Pack the held-out nEQ validation boxes of ``spec.validation`` (stage "validation").

    Box i is packed with seed ``validation.seed + i``, which the spec keeps apart from the
    training boxes' seeds, so no validation box repeats a training box.
    """
    val = spec.validation
    frames = []
    for k, system in enumerate(spec.system):
        for factor in val.density_factors:
            for _ in range(val.boxes_per_density):
                index = len(frames)
                origin = FrameOrigin(
                    campaign=spec.name,
                    stage="validation",
                    method="packmol",
                    equilibrated=False,
                    index=index,
                    seed=val.seed + index,
                    density_factor=factor,
                    system=k,
                )
                box = pack_box(system, system.density * factor, origin.seed, workdir / f"packmol-{index}")
                frames.append((box, origin))
    return frames


def system_of(spec: CampaignSpec, frame: Frame) -> int:
    """Index in ``spec.system`` of the composition ``frame`` was packed for (its species in order).

    Raises
    ------
    ValueError
        When no composition of the campaign lays its atoms out as ``frame`` does.

    """
    for k, system in enumerate(spec.system):
        if frame.species == species(system):
            return k
    raise ValueError(f"the frame's {frame.n_atoms} atoms match no composition of campaign {spec.name}")
