"""Untrained MACE committees for tests and benchmarks: random ScaleShiftMACE weights, saved as .model.

The files are what ``mace_run_train`` writes (``torch.save`` of the whole float64 module on the
CPU), so ``mace.calculators.MACECalculator(model_paths=...)`` loads them unchanged.
"""

from __future__ import annotations

from pathlib import Path

import mace  # noqa: F401  (before e3nn: importing mace lets torch.load read e3nn's pickled constants)
import numpy as np
import torch
from ase.data import atomic_numbers


def random_mace(
    elements: list[str],
    seed: int,
    hidden_irreps: str = "16x0e+16x1o",
    r_max: float = 6.0,
    num_interactions: int = 2,
    correlation: int = 3,
    max_ell: int = 3,
    avg_num_neighbors: float = 40.0,
) -> torch.nn.Module:
    """Return a float64 ScaleShiftMACE with weights drawn from ``torch.manual_seed(seed)``.

    The defaults are the paper's architecture (16x0e+16x1o, r_max 6 Å, two interaction
    layers) with mace_run_train's other defaults.  E0s and the scale/shift also vary with the
    seed so that members differ in every parameter and buffer, as trained members do.
    """
    from e3nn import o3  # here, not above: isort would put it before ``import mace``
    from mace import modules
    from mace.tools.torch_tools import default_dtype

    zs = sorted(atomic_numbers[el] for el in elements)
    rng = np.random.default_rng(seed)
    with default_dtype(torch.float64):  # e3nn takes the default dtype at construction
        torch.manual_seed(seed)
        model = modules.ScaleShiftMACE(
            r_max=r_max,
            num_bessel=8,
            num_polynomial_cutoff=5,
            max_ell=max_ell,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            num_interactions=num_interactions,
            num_elements=len(zs),
            hidden_irreps=o3.Irreps(hidden_irreps),
            MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=rng.normal(-100.0, 10.0, len(zs)),
            avg_num_neighbors=avg_num_neighbors,
            atomic_numbers=zs,
            correlation=correlation,
            gate=modules.gate_dict["silu"],
            radial_MLP=[64, 64, 64],
            atomic_inter_scale=float(rng.uniform(0.5, 1.5)),
            atomic_inter_shift=float(rng.normal(0.0, 0.1)),
        )
    return model


def write_committee(folder: Path, elements: list[str], n: int, seed: int = 0, **architecture) -> list[Path]:
    """Save ``n`` random members (seeds ``seed``..``seed + n - 1``) as ``folder/member_<k>.model``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        path = folder / f"member_{k}.model"
        torch.save(random_mace(elements, seed + k, **architecture).to("cpu"), path)
        paths.append(path)
    return paths
