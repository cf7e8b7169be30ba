"""Cubic boxes of ion pairs packed with Packmol, and the initial (nEQ) frames built from them.

Packmol (20.14, as packaged by Debian) knows no periodic boundaries, so every atom is
packed inside ``[tolerance/2, L - tolerance/2]`` (to Packmol's ~0.01 Å precision): an atom
and the periodic image of any other molecule's atom are then at least ``tolerance`` apart.

Seeds: the frame at position ``index`` of the initial set uses ``initial.seed + index``
(Packmol's seed for packed boxes, the rattle seed for rattled copies). Start boxes for
the MD walkers continue the same numbering after the initial set (see
:func:`start_frames`), so no two frames of a campaign share an index or a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import _Nav

from ilflows.execute import EngineError, require_executable, run_command
from ilflows.schemas.campaign import CampaignSpec, SystemSpec
from ilflows.schemas.frames import Frame, FrameOrigin
from ilflows.settings import get_settings
from ilflows.systems.ions import load_ion, molar_mass


class PackingError(EngineError):
    """Packmol found no packing; the message says which spec values to change."""


def box_edge(system: SystemSpec, density: float) -> float:
    """Edge, Å, of the cubic box holding ``system.n_pairs`` ion pairs at ``density`` g/cm^3."""
    grams = system.n_pairs * (molar_mass(system.cation) + molar_mass(system.anion)) / _Nav
    return (grams / density * 1e24) ** (1 / 3)


def molecule_extent(atoms: Atoms) -> float:
    """Largest interatomic distance of a molecule, Å."""
    return float(atoms.get_all_distances().max()) if len(atoms) > 1 else 0.0


def check_fits(system: SystemSpec, density: float) -> None:
    """Raise :class:`ValueError` when the largest ion cannot fit in the packable region.

    The packable region of the box is ``L - tolerance`` wide (see the module docstring).
    """
    edge = box_edge(system, density)
    extent, name = max((molecule_extent(load_ion(n)), n) for n in (system.cation, system.anion))
    if edge - system.tolerance <= extent:
        raise ValueError(
            f"system.density/system.n_pairs: {system.n_pairs} pair(s) at {density:.4g} g/cm^3 "
            f"make a {edge:.2f} Å box, which less system.tolerance ({system.tolerance} Å) "
            f"cannot hold {name} ({extent:.2f} Å across); raise system.n_pairs or lower the density"
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
        "(system.density or initial.density_factors) or system.tolerance, or raise system.n_pairs"
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
    """Pack ``system.n_pairs`` cations and anions into a cubic box at ``density`` g/cm^3.

    Parameters
    ----------
    system
        Ions, number of pairs and Packmol tolerance.
    density
        Target density, g/cm^3; the box edge is chosen so that mass/volume equals it.
    seed
        Packmol's random seed, >= 0 (Packmol reads -1 as "seed from the clock").
    workdir
        Folder for Packmol's input, molecule files, output and log (created if missing).

    Returns
    -------
    Frame
        All cations then all anions, each molecule's atoms contiguous and in template order.

    """
    if seed < 0:
        raise ValueError(f"packmol seed must be >= 0, got {seed}; use a non-negative initial.seed")
    check_fits(system, density)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ions = [load_ion(system.cation), load_ion(system.anion)]
    edge, tol = box_edge(system, density), system.tolerance
    lines = [f"tolerance {tol}", f"seed {seed}", "filetype xyz", "output packed.xyz"]
    for name, atoms in zip(("cation.xyz", "anion.xyz"), ions, strict=True):
        _write_xyz(workdir / name, atoms)
        lines += [
            f"structure {name}",
            f"  number {system.n_pairs}",
            f"  inside cube {tol / 2} {tol / 2} {tol / 2} {edge - tol}",
            "end structure",
        ]
    (workdir / "packmol.inp").write_text("\n".join(lines) + "\n")
    run_packmol(workdir)

    out = (workdir / "packed.xyz").read_text().splitlines()[2:]
    packed = np.array([[float(x) for x in line.split()[1:4]] for line in out if line.strip()])
    species, positions, start = [], [], 0
    for atoms in ions:
        for _ in range(system.n_pairs):
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

    For each density factor, ``initial.boxes_per_density`` boxes are packed at
    ``system.density * factor``, each followed in the list by its ``initial.rattled_copies``
    rattled copies (Gaussian displacements of ``initial.rattle_stdev`` Å per coordinate).
    Each origin's ``index`` is its position in the returned list; Packmol runs in
    ``workdir/packmol-<index>``.
    """
    init = spec.initial
    frames: list[tuple[Frame, FrameOrigin]] = []
    for factor in init.density_factors:
        for _ in range(init.boxes_per_density):
            index = len(frames)
            packed = _origin(spec, index, method="packmol", density_factor=factor)
            box = pack_box(
                spec.system, spec.system.density * factor, packed.seed, workdir / f"packmol-{index}"
            )
            frames.append((box, packed))
            for _ in range(init.rattled_copies):
                rattled = _origin(
                    spec,
                    len(frames),
                    method="rattle",
                    density_factor=factor,
                    rattle_stdev=init.rattle_stdev,
                    parent=packed.frame_id,
                )
                atoms = box.to_ase()
                atoms.rattle(stdev=init.rattle_stdev, seed=rattled.seed)
                frames.append((Frame.from_ase(atoms), rattled))
    return frames


def n_initial_frames(spec: CampaignSpec) -> int:
    """Return how many frames :func:`initial_frames` builds for ``spec``."""
    init = spec.initial
    return len(init.density_factors) * init.boxes_per_density * (1 + init.rattled_copies)


def start_frames(spec: CampaignSpec, workdir: Path, n: int) -> list[tuple[Frame, FrameOrigin]]:
    """Pack ``n`` boxes at ``system.density`` to start the MD walkers from.

    Their indices continue after the initial set (``n_initial_frames(spec) + i``), so their
    frame_ids and seeds never collide with those of :func:`initial_frames`; calling this again
    with the same spec returns the same boxes under the same ids.
    """
    first = n_initial_frames(spec)
    frames = []
    for index in range(first, first + n):
        origin = _origin(spec, index, method="packmol", density_factor=1.0)
        box = pack_box(spec.system, spec.system.density, origin.seed, workdir / f"packmol-{index}")
        frames.append((box, origin))
    return frames
