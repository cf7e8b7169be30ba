"""An ASE calculator for a committee of MACE and DeePMD models, the MACE ones sharing one graph.

The neighbour list and MACE's ``AtomicData`` batch are built once per geometry and handed to
every MACE member; each runs its own forward pass and force backward pass on that batch.
DeePMD members (frozen ``.pb`` models, TensorFlow backend) are evaluated through DeePMD's
``DeepPot`` on the same geometry, so one committee can mix both families.  The members' forces
feed :func:`ilflows.select.max_force_deviation`, the one definition of the ensemble deviation
(DeePMD's ``max_devi_f``), whatever the families.

Why not one vmapped call over stacked weights (``torch.func.stack_module_state`` plus
``functional_call``)?  MACE's forward cannot run under ``vmap`` as shipped: it calls
``requires_grad_`` on the positions and accumulates messages with an in-place
``scatter_add_`` on unbatched zeros, so it needs MACE's internals patched.  With them patched
(probed on CPU, float64, random members of 16x0e+16x1o) the vmapped committee of 4 was slower
than this loop: 0.30 s against 0.27 s for a 35-atom frame (one thread), 25 s against 23 s for
a 350-atom box (two threads).  Each member's edge tensor products are compute-bound, and
vmapping them saves no arithmetic; what the members do share is the graph.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from ase.atoms import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ilflows.execute import tensorflow_env, torch_device
from ilflows.select import max_force_deviation
from ilflows.train import model_reader

if TYPE_CHECKING:
    import torch

# The keys MACECalculator reads from Atoms, so that both build the same batch.
_INFO_KEYS = {"total_spin": "spin", "total_charge": "charge", "external_field": "external_field"}
_ARRAYS_KEYS = {"Qs": "charges"}


class CommitteeCalculator(Calculator):
    """Energy, forces and stress of a committee of MACE and DeePMD models, and its max force deviation.

    Parameters
    ----------
    model_paths
        MACE ``.model`` files (whole pickled modules, as ``mace_run_train`` writes them), loaded
        in float64 on ``device``, all sharing r_max, elements and head; and DeePMD frozen ``.pb``
        files, told apart by that suffix (TensorFlow places them itself, on a GPU it sees).
        Member k is ``model_paths[k]``.
    drive
        What drives the MD.  ``"first"`` (default): energy, forces and stress are member 0's
        and the other members are evaluated only when ``deviation`` is asked for, which is
        what LAMMPS ``pair_style deepmd`` does (it computes all models only on ``out_freq``
        steps and drives with model 0), so both explorers mean the same thing.
        ``"mean"``: the committee mean, evaluating every member on every step (MACE's own
        committee calculator does this).
    device
        torch device of the MACE members, "cpu" or "cuda"; default: the ``device`` setting
        (:func:`ilflows.execute.torch_device`).

    Notes
    -----
    Results beyond ASE's ``energy``/``free_energy``/``forces``/``stress``:
    ``deviation`` (max force deviation, eV/Å), ``forces_comm`` (each member's forces,
    shape (n_models, n_atoms, 3), eV/Å), ``energies_comm`` (each member's energy, eV) and, with
    a cell, ``stresses_comm`` (each member's 3x3 stress, eV/Å^3, ASE's sign).
    Asking for any of them on a geometry whose driving
    forces are already known evaluates only the members not yet evaluated there.

    """

    implemented_properties = [
        "energy",
        "free_energy",
        "forces",
        "stress",
        "deviation",
        "forces_comm",
        "energies_comm",
        "stresses_comm",
    ]

    def __init__(
        self,
        model_paths: Sequence[str | Path],
        drive: Literal["first", "mean"] = "first",
        device: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if drive not in ("first", "mean"):
            raise ValueError(f"drive must be 'first' or 'mean', got {drive!r}")
        if not model_paths:
            raise ValueError("a committee needs at least one model file")
        self.drive = drive
        # torch and MACE load only for MACE members: a DeePMD or other committee starts in a blink
        self.mace = [Path(path).suffix == ".model" for path in model_paths]
        self.device = device or (torch_device() if any(self.mace) else "cpu")
        self.models = [_load(path, self.device) for path in model_paths]
        mace_models = [
            (path, m) for path, m, is_mace in zip(model_paths, self.models, self.mace, strict=True) if is_mace
        ]
        self.z_table = self.r_max = None
        if mace_models:
            from mace.tools import utils

            first_path, first = mace_models[0]
            self.r_max = float(first.r_max)
            self.z_table = utils.AtomicNumberTable([int(z) for z in first.atomic_numbers])
            self.heads = list(getattr(first, "heads", ["Default"]))
            for path, model in mace_models:
                same = (
                    float(model.r_max) == self.r_max
                    and [int(z) for z in model.atomic_numbers] == self.z_table.zs
                    and list(getattr(model, "heads", ["Default"])) == self.heads
                )
                if not same:
                    raise ValueError(
                        f"{path}: r_max, elements or heads differ from {first_path}; "
                        "MACE committee members must share them to share one graph"
                    )
            if len(self.heads) != 1:
                raise ValueError(f"multi-head MACE models are not supported (heads {self.heads})")
        self._clear()

    @property
    def n_models(self) -> int:
        """Number of committee members."""
        return len(self.models)

    def reset(self) -> None:
        """Forget results, graph and member outputs (ASE calls this when the atoms change)."""
        super().reset()
        self._clear()

    def _clear(self) -> None:
        self._checked = False  # the geometry is finite and (MACE members) its graph is built
        self._graph: dict[str, torch.Tensor] | None = None
        self._members: dict[int, tuple[float, np.ndarray, np.ndarray | None]] = {}

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Evaluate the members needed for ``properties`` on one shared graph.

        Raises
        ------
        FloatingPointError
            When positions or cell are not finite, or a member returns non-finite energy,
            forces or stress (the MD blew up).
        ValueError
            When the atoms hold an element the models do not know.

        """
        super().calculate(atoms, properties, system_changes)
        if system_changes or not self._checked:
            self._clear()
            if not (np.isfinite(self.atoms.positions).all() and np.isfinite(self.atoms.cell.array).all()):
                raise FloatingPointError("positions or cell are not finite: the MD blew up")
            if self.z_table is not None:
                self._graph = self._build_graph(self.atoms)
            self._checked = True
        every_member = {"deviation", "forces_comm", "energies_comm", "stresses_comm"}
        full = self.drive == "mean" or not every_member.isdisjoint(properties)
        for k in range(self.n_models if full else 1):
            if k not in self._members:
                self._members[k] = self._evaluate(k)
        self._fill_results()

    def _build_graph(self, atoms: Atoms) -> dict[str, torch.Tensor]:
        """Neighbour list and MACE batch of ``atoms``, built the way MACECalculator builds them."""
        import torch
        from mace import data as mace_data
        from mace.tools import torch_geometric, torch_tools

        unknown = set(atoms.numbers.tolist()) - set(self.z_table.zs)
        if unknown:
            raise ValueError(
                f"atoms hold atomic numbers {sorted(unknown)} that the MACE models "
                f"(elements {self.z_table.zs}) were not trained on"
            )
        keyspec = mace_data.KeySpecification(info_keys=dict(_INFO_KEYS), arrays_keys=dict(_ARRAYS_KEYS))
        with torch_tools.default_dtype(torch.float64):
            config = mace_data.config_from_atoms(atoms, key_specification=keyspec, head_name=self.heads[0])
            graph = mace_data.AtomicData.from_config(
                config, z_table=self.z_table, cutoff=self.r_max, heads=self.heads
            )
        batch = torch_geometric.Batch.from_data_list([graph]).to_dict()
        return {key: val.to(self.device) if torch.is_tensor(val) else val for key, val in batch.items()}

    def _evaluate(self, k: int) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Energy (eV), forces (eV/Å) and 3x3 stress (eV/Å^3; None without a cell) of member k."""
        periodic = bool(self.atoms.pbc.all())
        if not self.mace[k]:
            return _finite(k, *self.models[k].terms(self.atoms, periodic))
        # The forward pass replaces positions (and shifts, for the stress) in the dict it is
        # given and sets requires_grad on the positions: give each member its own dict and
        # positions leaf; the other tensors of the graph are only read.
        data = dict(self._graph)
        data["positions"] = self._graph["positions"].detach().clone()
        out = self.models[k](data, compute_force=True, compute_stress=periodic, training=False)
        energy = float(out["energy"].detach()[0])
        forces = out["forces"].detach().cpu().numpy()
        stress = out["stress"].detach()[0].cpu().numpy() if periodic else None
        return _finite(k, energy, forces, stress)

    def _fill_results(self) -> None:
        members = [self._members[k] for k in sorted(self._members)]
        driving = members if self.drive == "mean" else members[:1]
        energy = float(np.mean([m[0] for m in driving]))
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": np.mean([m[1] for m in driving], axis=0),
        }
        if driving[0][2] is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(np.mean([m[2] for m in driving], axis=0))
        if len(members) == self.n_models:
            forces = np.stack([m[1] for m in members])
            self.results["forces_comm"] = forces
            self.results["energies_comm"] = np.array([m[0] for m in members])
            self.results["deviation"] = float(max_force_deviation(forces[:, None])[0])
            if members[0][2] is not None:
                self.results["stresses_comm"] = np.stack([m[2] for m in members])


def _finite(k: int, energy: float, forces: np.ndarray, stress: np.ndarray | None):
    """Return member k's results, refusing non-finite ones (the MD blew up)."""
    finite = np.isfinite(energy) and np.isfinite(forces).all()
    if not finite or (stress is not None and not np.isfinite(stress).all()):
        raise FloatingPointError(f"committee member {k} returned non-finite energy, forces or stress")
    return energy, forces, stress


class _DeepmdMember:
    """A frozen DeePMD model (``DeepPot``) as a committee member."""

    def __init__(self, path: str | Path):
        os.environ.update(tensorflow_env())  # read when TensorFlow first loads, as dp and lmp read it
        from deepmd.infer import DeepPot  # TensorFlow loads only for DeePMD members

        self.model = DeepPot(str(path))
        self.types = {name: i for i, name in enumerate(self.model.get_type_map())}

    def terms(self, atoms: Atoms, periodic: bool) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Energy (eV), forces (eV/Å) and 3x3 stress (eV/Å^3, ASE's sign; None without a cell)."""
        unknown = set(atoms.get_chemical_symbols()) - set(self.types)
        if unknown:
            raise ValueError(
                f"atoms hold elements {sorted(unknown)} that the DeePMD model was not trained on"
            )
        cell = atoms.cell.array.reshape(1, 9) if periodic else None
        atom_types = [self.types[s] for s in atoms.get_chemical_symbols()]
        energy, forces, virial = self.model.eval(atoms.positions.reshape(1, -1), cell, atom_types)[:3]
        virial = virial.reshape(3, 3)
        # ASE's stress is minus the virial over the volume (positive when stretched)
        stress = -0.5 * (virial + virial.T) / atoms.get_volume() if periodic else None
        return float(energy.ravel()[0]), forces.reshape(-1, 3), stress


def _load(path: str | Path, device: str):
    """Load a member by its file's suffix.

    A DeePMD ``.pb``, a pickled MACE ``.model`` (on ``device``, in float64), or another family's
    file, read by the trainer that writes it (:func:`ilflows.train.model_reader`).
    """
    suffix = Path(path).suffix
    if suffix == ".pb":
        return _DeepmdMember(path)
    if suffix != ".model":
        return model_reader(suffix)(path)
    import mace  # noqa: F401  (first: lets e3nn and torch.load read MACE's pickled modules)
    import torch

    model = torch.load(Path(path), map_location=device, weights_only=False).double().eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
