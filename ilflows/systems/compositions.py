"""Compositions of the papers' liquids and their reference densities.

Paper 1 is Park, Ryu & Lee, *Ionic Liquid Molecular Dynamics Simulation with Machine Learning
Force Fields: DPMD and MACE*: PYR14BF4 and LiTFSI/PYR14TFSI at 0-40 % LiTFSI, every box of
10 ion pairs, simulated at 423 K.  It scales its nEQ boxes (0.77-1.26) relative to the density
of its APPLE&P polarizable-force-field MD, so that density is the reference used here for its
liquids; its experimental values (Table 4, footnotes a and b) are kept alongside.  Paper 1
gives no density for 40 % LiTFSI: that value is an estimate (see :data:`LIQUIDS`).

The BMIM-BF4 paper is Zills et al., Faraday Discuss. 2024 (doi:10.1039/D4FD00025K): 10 ion
pairs; its experimental densities (attributed there to Hayamizu et al.) are listed in
``shared/reference-data/README.md`` as read from the authors' ``density_eval.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ilflows.schemas.inputs import SystemSpec


def litfsi_pyr14tfsi(n_pairs: int = 10, lithium_fraction: float = 0.2) -> dict[str, int]:
    """Composition of ``n_pairs`` ion pairs of which a fraction ``lithium_fraction`` is LiTFSI.

    Paper 1's "x % LiTFSI" in 10 ion pairs: ``x/10`` LiTFSI and ``10 - x/10`` PYR14TFSI pairs,
    e.g. 20 % -> ``{"PYR14": 8, "Li": 2, "TFSI": 10}``.

    Raises
    ------
    ValueError
        When ``n_pairs * lithium_fraction`` is not a whole number of Li+ ions, or the
        fraction is outside [0, 1].

    """
    if not 0 <= lithium_fraction <= 1:
        raise ValueError(f"lithium_fraction must be in [0, 1], got {lithium_fraction}")
    n_li = round(n_pairs * lithium_fraction)
    if abs(n_li - n_pairs * lithium_fraction) > 1e-9:
        raise ValueError(
            f"{lithium_fraction:.0%} LiTFSI in {n_pairs} ion pairs is not a whole number of Li+ "
            f"({n_pairs * lithium_fraction:g}); pick n_pairs so that n_pairs x lithium_fraction is whole"
        )
    counts = {"PYR14": n_pairs - n_li, "Li": n_li, "TFSI": n_pairs}
    return {name: n for name, n in counts.items() if n > 0}


@dataclass(frozen=True)
class Liquid:
    """One liquid of the papers with its reference density.

    Attributes
    ----------
    name
        Key in :data:`LIQUIDS`.
    ions
        Composition of the papers' boxes (ion name -> count), 10 ion pairs.
    density
        Reference density, g/cm^3 (what ``system.density`` should be).
    temperature
        Temperature of the reference density, K.
    source
        Where the density comes from (paper, table, method).
    estimate
        True when no paper gives the value and it was derived here (see ``source``).
    experimental
        Experimental density at ``temperature`` where a source gives one, g/cm^3.
    experimental_source
        Where the experimental density comes from.

    """

    name: str
    ions: dict[str, int] = field(hash=False)
    density: float
    temperature: float
    source: str
    estimate: bool = False
    experimental: float | None = None
    experimental_source: str | None = None

    def system(self, tolerance: float = 2.0) -> SystemSpec:
        """Return the ``system`` section of a campaign spec for this liquid's 10-pair box."""
        return SystemSpec(
            ions=dict(self.ions),
            density=self.density,
            tolerance=tolerance,
            reference_density_source=self.source,
        )


_PAPER1_APPLEP = "paper 1 Table 4, APPLE&P MD at 423 K"

LIQUIDS: dict[str, Liquid] = {
    liquid.name: liquid
    for liquid in (
        Liquid(
            "PYR14BF4",
            {"PYR14": 10, "BF4": 10},
            1.0707,
            423.0,
            "paper 1 Tables 2 and 4, APPLE&P MD at 423 K (paper 1 gives no experimental value)",
        ),
        Liquid(
            "PYR14TFSI",
            litfsi_pyr14tfsi(10, 0.0),
            1.3035,
            423.0,
            _PAPER1_APPLEP,
            experimental=1.2855,
            experimental_source="paper 1 Table 4 footnote a: VFT fit of Tokuda et al., JPCB 110, 2833 (2006)",
        ),
        Liquid(
            "LiTFSI10-PYR14TFSI",
            litfsi_pyr14tfsi(10, 0.1),
            1.3290,
            423.0,
            _PAPER1_APPLEP,
            experimental=1.3091,
            experimental_source="paper 1 Table 4 footnote b: Solano et al., JCP 139 (2013)",
        ),
        Liquid("LiTFSI20-PYR14TFSI", litfsi_pyr14tfsi(10, 0.2), 1.3578, 423.0, _PAPER1_APPLEP),
        Liquid("LiTFSI30-PYR14TFSI", litfsi_pyr14tfsi(10, 0.3), 1.3896, 423.0, _PAPER1_APPLEP),
        # Paper 1 ran 40 % (Table S1) but reports no density for it.
        Liquid(
            "LiTFSI40-PYR14TFSI",
            litfsi_pyr14tfsi(10, 0.4),
            1.417,
            423.0,
            "ESTIMATE: least-squares line through paper 1's APPLE&P densities at 0-30 % LiTFSI "
            "(Table 4, 423 K) evaluated at 40 %",
            estimate=True,
        ),
        Liquid(
            "BMIMBF4",
            {"BMIM": 10, "BF4": 10},
            1.204,
            293.0,
            "experiment at 293 K, shared/reference-data/README.md (Zills et al. density_eval.ipynb; "
            "the BMIM-BF4 paper cites Hayamizu et al.)",
            experimental=1.204,
            experimental_source="shared/reference-data/README.md",
        ),
    )
}

BMIM_BF4_EXPERIMENTAL_DENSITY: dict[float, float] = {
    283.0: 1.211,
    293.0: 1.204,
    313.0: 1.190,
    333.0: 1.176,
    353.0: 1.162,
}
"""BMIM-BF4 experimental density, temperature K -> g/cm^3 (shared/reference-data/README.md)."""
