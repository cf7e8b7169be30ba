"""Every liquid property a production run asks for, from its trajectory (pure: no store, no files).

Which properties: density with a block confidence interval (NPT), diffusion of each ion species
from its centres of mass (given a window), the RDFs of the requested element pairs, and, where
the ions are there, Li-TFSI cluster populations, TFSI conformer populations and the PYR14 butyl
anti/gauche split (:mod:`ilflows.analysis.conformers` defines them).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ilflows.analysis import conformers, liquid
from ilflows.schemas.control import ProductionSpec
from ilflows.schemas.records import Production
from ilflows.schemas.results import DiffusionCoefficient, Properties, RDFCurve


def liquid_properties(
    production: Production,
    run: ProductionSpec,
    molecules: list[tuple[str, range]],
    uuid: str,
    trust_hi: float | None = None,
) -> Properties:
    """Analyse ``production`` (a run of ``run``) whose atoms form ``molecules`` (ion name, atoms).

    Warns, in the record, when the committee's deviation reached ``trust_hi`` (eV/Å) during the
    run, when a diffusion window is not diffusive, and when the density's blocks are shorter
    than twice its correlation time (the interval is then too narrow).
    """
    traj = production.trajectory
    first = int(len(traj.steps) * run.discard)
    positions = np.asarray(traj.positions, dtype=float)[first:]
    cells = np.asarray(traj.cells, dtype=float)[first:]
    if len(positions) < 2:
        raise ValueError(
            f"production.{run.name}: {len(positions)} frames after discarding {run.discard:.0%}; "
            "write frames more often (frame_every) or run longer"
        )
    dt = production.frame_every * production.timestep / 1000  # ps between frames
    by_ion: dict[str, list[range]] = defaultdict(list)
    for name, atoms in molecules:
        by_ion[name].append(atoms)
    deviations = [d for d in production.deviations if np.isfinite(d)]
    out = Properties(
        campaign=production.campaign,
        iteration=production.iteration,
        run=run.name,
        production_uuid=uuid,
        model_sha256=production.model_sha256,
        ensemble=production.ensemble,
        temperature=production.temperature,
        n_frames=len(positions),
        time_span=(len(positions) - 1) * dt,
        max_deviation=max(deviations) if deviations else None,
    )
    if trust_hi is not None and deviations and max(deviations) >= trust_hi:
        out.warnings.append(
            f"the committee's deviation reached {max(deviations):.3g} eV/Å, past trust_hi {trust_hi:g}: "
            "the run left the region the models were trained for"
        )
    if production.ensemble == "npt":
        series = liquid.densities(traj.species, cells)
        estimate = liquid.block_average(series, run.density_blocks)
        out.density, out.density_ci, out.density_series = estimate.mean, estimate.half_width, series.tolist()
        out.density_correlation = liquid.correlation_time(series)
        block = len(series) // run.density_blocks
        if block < 2 * out.density_correlation:
            out.warnings.append(
                f"density: blocks of {block} frames are shorter than twice the correlation time "
                f"({out.density_correlation:.1f} frames), so the interval is too narrow; run longer or use "
                "fewer density_blocks"
            )
    if run.diffusion_window:
        edge = float(np.cbrt(np.abs(np.linalg.det(cells)).mean()))  # Å, the cubic box's edge
        for ion, atoms in sorted(by_ion.items()):
            com = liquid.centres_of_mass(positions, cells, traj.species, atoms)
            lags, msd = liquid.msd(com, dt)
            fit = liquid.diffusion(com, dt, run.diffusion_window, edge, production.temperature, run.viscosity)
            out.diffusion.append(
                DiffusionCoefficient(
                    ion=ion,
                    d=fit.d,
                    d_ci=fit.d_ci,
                    n_blocks=fit.n_blocks,
                    log_slope=fit.log_slope,
                    diffusive=fit.diffusive,
                    d_corrected=fit.d_corrected,
                    window=fit.window,
                    lags=lags.tolist(),
                    msd=msd.tolist(),
                )
            )
            if not fit.diffusive:
                regime = "ballistic" if fit.log_slope > liquid.DIFFUSIVE[1] else "caged"
                out.warnings.append(
                    f"D {ion}: the MSD's log-slope over the window {list(fit.window)} ps is "
                    f"{fit.log_slope:.2f} ({regime}; diffusive is 1): move diffusion_window later, run longer"
                )
            if fit.d_ci is None:
                out.warnings.append(
                    f"D {ion}: the run is shorter than two blocks of twice the window's end: no error bar"
                )
    for pair in run.rdf_pairs:
        curve = liquid.rdf(positions, cells, traj.species, pair, r_max=run.rdf_max)
        out.rdfs.append(RDFCurve(pair=curve.pair, r=curve.r.tolist(), g=curve.g.tolist()))
    cell = None if run.molecule else cells  # a single ion in vacuum: no periodic images
    if "TFSI" in by_ion:
        phi, psi = conformers.tfsi_angles(positions, cell, by_ion["TFSI"])
        out.tfsi_conformers = _fractions(conformers.classify_tfsi(phi, psi))
        out.tfsi_angles = np.column_stack([np.ravel(phi), np.ravel(psi)]).tolist()
    if "PYR14" in by_ion:
        r1, r2 = conformers.pyr14_distances(positions, cell, by_ion["PYR14"])
        out.pyr14_butyl = _fractions(conformers.butyl_state(r2))
        out.pyr14_distances = np.column_stack([np.ravel(r1), np.ravel(r2)]).tolist()
    if "Li" in by_ion and "TFSI" in by_ion:
        li = [atoms[0] for atoms in by_ion["Li"]]
        counts = conformers.li_tfsi_counts(positions, cells, li, by_ion["TFSI"], cutoff=run.li_cutoff)
        out.li_clusters = _fractions(counts)
    return out


def _fractions(values: np.ndarray) -> dict[str, float]:
    return {str(key): float(share) for key, share in conformers.cluster_population(values).items()}


def observable_spreads(runs: dict[str, list[Properties | None]]) -> dict[str, float]:
    """Relative spread (max - min) / |mean| over members of each run's density and each ion's D.

    ``runs`` maps a run name to its Properties per member.  Empty when a member's run failed:
    the members cannot be said to agree then.
    """
    out = {}
    for name, members in runs.items():
        if not members or any(p is None for p in members):
            return {}
        if all(p.density is not None for p in members):
            out[f"{name} density"] = _spread([p.density for p in members])
        for ion in sorted({d.ion for p in members for d in p.diffusion}):
            values = [next((d.d for d in p.diffusion if d.ion == ion), np.nan) for p in members]
            out[f"{name} D {ion}"] = _spread(values)
    return out


def _spread(values: list[float]) -> float:
    values = np.asarray(values, dtype=float)
    return float((values.max() - values.min()) / abs(values.mean()))
