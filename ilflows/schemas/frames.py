"""Atomic frames and where they came from."""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field


class Frame(BaseModel):
    """One periodic atomic configuration."""

    species: list[str] = Field(description="Chemical symbol of each atom, in order.")
    positions: list[list[float]] = Field(description="Cartesian positions, shape (n_atoms, 3), Å.")
    cell: list[list[float]] = Field(description="Cell vectors as rows, shape (3, 3), Å.")

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.species)

    @property
    def volume(self) -> float:
        """Cell volume, Å^3."""
        return float(abs(np.linalg.det(np.asarray(self.cell))))

    def fingerprint(self) -> str:
        """SHA-256 of species, cell (to 1e-4 Å) and fractional positions wrapped into the cell.

        The fractional coordinates are wrapped, rounded to 1e-6 (1e-5 Å in a 10 Å box) and wrapped again, so
        the same configuration however written (a walker's first frame and the box it started
        from, an atom at 0 or at the far face) gives the same print; frames of an MD run differ
        far more.
        """
        cell = np.asarray(self.cell, dtype=float)
        fractional = np.linalg.solve(cell.T, np.asarray(self.positions, dtype=float).T).T
        digest = hashlib.sha256(" ".join(self.species).encode())
        digest.update((np.round(cell, 4) + 0.0).tobytes())  # + 0.0: -0.0 becomes 0.0
        digest.update((np.round(fractional % 1.0, 6) % 1.0 + 0.0).tobytes())  # 0.9999999 -> 1.0 -> 0.0
        return digest.hexdigest()

    def to_ase(self):
        """Return the frame as a periodic :class:`ase.Atoms`."""
        from ase import Atoms

        return Atoms(self.species, positions=self.positions, cell=self.cell, pbc=True)

    @classmethod
    def from_ase(cls, atoms) -> Frame:
        """Build a frame from an :class:`ase.Atoms` (positions and cell in Å)."""
        return cls(
            species=atoms.get_chemical_symbols(),
            positions=atoms.get_positions().tolist(),
            cell=np.asarray(atoms.get_cell()).tolist(),
        )


class FrameOrigin(BaseModel):
    """How a frame was made.

    An explored frame is identified by (campaign, iteration, walker, frame_index).
    """

    campaign: str = Field(description="Campaign name.")
    stage: Literal["initial", "explored", "validation"] = Field(
        description="initial: built before the loop; explored: taken from an MD exploration."
    )
    method: str = Field(
        description="How it was made: 'packmol', 'rattle', 'md' (xTB or model MD), "
        "'aimd' (MD with the DFT engine), 'file' (a walker's start from explore.starts)."
    )
    equilibrated: bool = Field(
        False, description="True for EQ structures (from MD), False for nEQ (packed, rattled)."
    )
    iteration: int | None = Field(None, description="Loop iteration of the exploration (explored frames).")
    walker: int | None = Field(None, description="Index of the exploration (MD walker) in its iteration.")
    frame_index: int | None = Field(None, description="Index of the frame in its exploration trajectory.")
    md_step: int | None = Field(None, description="MD step at which the frame was written.")
    deviation: float | None = Field(
        None, description="Ensemble max force deviation of the frame when selected, eV/Å."
    )
    density_factor: float | None = Field(
        None,
        description="Packed density divided by the composition's reference density (nEQ boxes).",
    )
    rattle_stdev: float | None = Field(None, description="Gaussian displacement applied per atom, Å.")
    temperature: float | None = Field(None, description="MD temperature, K.")
    timestep: float | None = Field(None, description="MD time step, fs.")
    seed: int | None = Field(None, description="Random seed used to make the frame.")
    parent: str | None = Field(None, description="frame_id of the frame this one was derived from.")
    index: int | None = Field(None, description="Index of an initial frame in its set.")
    system: int | None = Field(
        None, description="Index of the frame's composition in the spec's system list."
    )
    source: str | None = Field(
        None, description="Set the frame belongs to: an import ('import0') or an initial MD run ('md12')."
    )

    @property
    def frame_id(self) -> str:
        """Stable identity of the frame within its campaign."""
        if self.stage == "explored":
            return f"{self.campaign}/it{self.iteration}/w{self.walker}/f{self.frame_index}"
        if self.source:
            return f"{self.campaign}/{self.stage}/{self.source}/{self.index}"
        return f"{self.campaign}/{self.stage}/{self.index}"
