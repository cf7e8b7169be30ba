"""Liquid properties from a trajectory: density, RDF, mean squared displacement and diffusion.

Pure functions on numpy arrays (positions in Å, cells as rows in Å, times in ps); RDF and MSD are
computed by MDAnalysis (``InterRDF``, ``EinsteinMSD``) on an in-memory universe, so ilflows
adds only what MDAnalysis does not do: ion centres of mass made whole across the periodic
boundary and unwrapped in time, the Einstein fit over a chosen window, the finite-size
correction, and block-averaged confidence intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import atomic_masses, atomic_numbers
from scipy import stats

from ilflows.geometry import cell_widths, mass_density, nearest_image, species_mass

KB = 1.380649e-23  # J/K
A2_PER_PS_IN_M2_PER_S = 1e-8  # 1 Å^2/ps = 1e-20 m^2 / 1e-12 s
YEH_HUMMER_XI = 2.837297  # cubic-lattice constant of the finite-size correction


@dataclass(frozen=True)
class Estimate:
    """A mean with its confidence interval."""

    mean: float
    half_width: float  # half width of the confidence interval, same unit as mean
    n_blocks: int  # independent blocks the interval comes from


def block_average(series: np.ndarray, n_blocks: int = 5, confidence: float = 0.95) -> Estimate:
    """Mean of a time series with a Student-t confidence interval from block means.

    The series is cut into ``n_blocks`` equal consecutive blocks (a remainder at the start is
    dropped: it is the least equilibrated part); blocks longer than the correlation time make
    their means independent, which the interval assumes.
    """
    series = np.asarray(series, dtype=float)
    if n_blocks < 2 or len(series) < n_blocks:
        raise ValueError(f"n_blocks: need 2 to {len(series)} blocks for {len(series)} values, got {n_blocks}")
    size = len(series) // n_blocks
    means = series[len(series) - size * n_blocks :].reshape(n_blocks, size).mean(axis=1)
    t = stats.t.ppf(0.5 + confidence / 2, n_blocks - 1)
    return Estimate(float(means.mean()), float(t * means.std(ddof=1) / np.sqrt(n_blocks)), n_blocks)


def densities(species: list[str], cells: np.ndarray) -> np.ndarray:
    """Mass density of each frame, g/cm^3, from the cells (n_frames, 3, 3) in Å."""
    return mass_density(species_mass(species), np.abs(np.linalg.det(np.asarray(cells, dtype=float))))


def _universe(positions: np.ndarray, cells: np.ndarray, species: list[str], dt: float = 1.0):
    """Build an in-memory MDAnalysis universe of the trajectory (one residue per atom)."""
    from MDAnalysis import Universe
    from MDAnalysis.coordinates.memory import MemoryReader
    from MDAnalysis.lib.mdamath import triclinic_box

    positions = np.asarray(positions, dtype=np.float32)
    n_frames, n_atoms, _ = positions.shape
    cells = np.broadcast_to(np.asarray(cells, dtype=float), (n_frames, 3, 3))
    u = Universe.empty(n_atoms, trajectory=True)
    u.add_TopologyAttr("types", list(species))
    u.add_TopologyAttr("masses", [atomic_masses[atomic_numbers[s]] for s in species])
    dims = np.array([triclinic_box(*cell) for cell in cells], dtype=np.float32)
    u.load_new(positions, format=MemoryReader, dimensions=dims, dt=dt)
    return u


@dataclass(frozen=True)
class RDF:
    """A radial distribution function."""

    r: np.ndarray  # bin centres, Å
    g: np.ndarray  # g(r), dimensionless
    pair: tuple[str, str]  # the two elements


def rdf(
    positions: np.ndarray,
    cells: np.ndarray,
    species: list[str],
    pair: tuple[str, str],
    r_max: float = 10.0,
    n_bins: int = 100,
) -> RDF:
    """RDF of element pair ``pair`` (e.g. ("B", "N")), averaged over frames, by MDAnalysis.

    Self pairs are left out for a like pair.  ``r_max`` must stay within half the shortest
    perpendicular box width (minimum image).
    """
    from MDAnalysis.analysis.rdf import InterRDF

    width = cell_widths(np.asarray(cells, dtype=float).reshape(-1, 3, 3)[0]).min()
    if r_max > width / 2 + 1e-9:
        raise ValueError(f"r_max: {r_max} Å exceeds half the box width ({width / 2:.2f} Å); lower it")
    u = _universe(positions, cells, species)
    a, b = (u.select_atoms(f"type {element}") for element in pair)
    for element, group in zip(pair, (a, b), strict=True):
        if len(group) == 0:
            raise ValueError(f"pair: no {element} atoms in the trajectory")
    like = pair[0] == pair[1]
    calc = InterRDF(a, b, nbins=n_bins, range=(0.0, r_max), exclusion_block=(1, 1) if like else None)
    calc.run()
    return RDF(np.asarray(calc.results.bins), np.asarray(calc.results.rdf), tuple(pair))


def centres_of_mass(
    positions: np.ndarray, cells: np.ndarray, species: list[str], molecules: list[range]
) -> np.ndarray:
    """Unwrapped centre of mass of each molecule in each frame, (n_frames, n_molecules, 3), Å.

    Each molecule is made whole by the minimum image about its first atom (molecules are far
    smaller than half the box), and the centres are unwrapped in time by removing jumps of
    more than half a box between frames (frames must be closer than that in time).
    """
    positions = np.asarray(positions, dtype=float)
    n_frames = len(positions)
    cells = np.broadcast_to(np.asarray(cells, dtype=float), (n_frames, 3, 3))
    inverse = np.linalg.inv(cells)
    masses = np.array([atomic_masses[atomic_numbers[s]] for s in species])
    com = np.empty((n_frames, len(molecules), 3))
    for k, atoms in enumerate(molecules):
        idx = np.asarray(atoms)
        rel = positions[:, idx] - positions[:, idx[:1]]
        frac = np.einsum("fai,fij->faj", rel, inverse)
        rel = np.einsum("faj,fji->fai", nearest_image(frac), cells)
        w = masses[idx] / masses[idx].sum()
        com[:, k] = positions[:, idx[0]] + np.einsum("a,fai->fi", w, rel)
    # unwrap in time, in fractional coordinates of each frame's cell
    frac = np.einsum("fmi,fij->fmj", com, inverse)
    steps = np.diff(frac, axis=0)
    frac[1:] -= np.cumsum(np.round(steps), axis=0)
    return np.einsum("fmj,fji->fmi", frac, cells)


def msd(unwrapped: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared displacement over all time origins, by MDAnalysis' ``EinsteinMSD``.

    ``unwrapped``: (n_frames, n_particles, 3) unwrapped positions, Å, e.g. from
    :func:`centres_of_mass`; ``dt``: time between frames, ps.  Returns (lag times in ps,
    MSD in Å^2), starting at lag 0.
    """
    from MDAnalysis.analysis.msd import EinsteinMSD

    n = unwrapped.shape[1]
    u = _universe(unwrapped, np.diag([1e6, 1e6, 1e6]), ["H"] * n, dt=dt)  # no box: already unwrapped
    calc = EinsteinMSD(u, select="all", msd_type="xyz", fft=False)
    calc.run()
    return np.arange(calc.n_frames) * dt, np.asarray(calc.results.timeseries)


def msd_upto(unwrapped: np.ndarray, dt: float, last: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`msd` for lags 0 to ``last`` frames only (all time origins), in numpy: O(frames x last).

    What a fit window needs, without the whole curve's O(frames^2) cost.
    """
    last = min(last, len(unwrapped) - 1)
    values = [0.0] + [
        float(np.mean(np.sum((unwrapped[lag:] - unwrapped[:-lag]) ** 2, axis=-1)))
        for lag in range(1, last + 1)
    ]
    return np.arange(last + 1) * dt, np.array(values)


@dataclass(frozen=True)
class Diffusion:
    """A self-diffusion coefficient from the Einstein relation."""

    d: float  # m^2/s, as simulated (periodic box), from the whole run
    d_ci: float | None  # 95 % half width from independent time blocks, m^2/s; None: too short for 2
    n_blocks: int  # time blocks behind d_ci
    log_slope: float  # d ln MSD / d ln t over the window: 1 when diffusive, 2 when ballistic
    window: tuple[float, float]  # lag-time window of the linear fit, ps
    d_corrected: float | None  # with the Yeh-Hummer finite-size correction, m^2/s

    @property
    def diffusive(self) -> bool:
        """Whether the window lies in the diffusive regime (log-slope within 0.8-1.2)."""
        return DIFFUSIVE[0] <= self.log_slope <= DIFFUSIVE[1]


DIFFUSIVE = (0.8, 1.2)  # log-slope of the MSD that counts as diffusive; ballistic motion gives 2


def einstein_slope(
    lags: np.ndarray, msd_values: np.ndarray, window: tuple[float, float]
) -> tuple[float, float]:
    """(D in m^2/s, log-slope d ln MSD / d ln t) of MSD(t) over the ``window`` (ps) of lag times."""
    lags, msd_values = np.asarray(lags), np.asarray(msd_values)
    inside = (lags >= window[0]) & (lags <= window[1]) & (lags > 0)
    if inside.sum() < 3:
        raise ValueError(f"window: {window} ps holds {inside.sum()} lag times; widen it (need 3)")
    slope = stats.linregress(lags[inside], msd_values[inside]).slope
    log_slope = stats.linregress(np.log(lags[inside]), np.log(np.maximum(msd_values[inside], 1e-300))).slope
    return float(slope / 6 * A2_PER_PS_IN_M2_PER_S), float(log_slope)


def diffusion(
    unwrapped: np.ndarray,
    dt: float,
    window: tuple[float, float],
    box_length: float | None = None,
    temperature: float | None = None,
    viscosity: float | None = None,
    confidence: float = 0.95,
) -> Diffusion:
    """D = slope / 6 of MSD(t) over the diffusive ``window`` (ps), with an interval from time blocks.

    ``unwrapped``: (n_frames, n_particles, 3) unwrapped positions, Å; ``dt``: ps between frames.
    D is fitted on the MSD of the whole run; its interval is Student-t over the D of consecutive
    time blocks, as many as are at least twice the window's end long (at most 5): blocks, unlike
    the fit's standard error, see the scatter a rerun would show.  The log-slope of the MSD over
    the window says whether it is diffusive (1) or still ballistic (2) or caged (< 1).  With
    ``box_length`` (Å), ``temperature`` (K) and ``viscosity`` (Pa s) the Yeh-Hummer correction
    kT xi / (6 pi eta L) is added for a cubic box.
    """
    unwrapped = np.asarray(unwrapped, dtype=float)
    last = int(np.floor(window[1] / dt + 1e-9))  # the longest lag the fit needs, frames
    d, log_slope = einstein_slope(*msd_upto(unwrapped, dt, last), window)
    block = 2 * last + 1  # frames per block
    n_blocks = min(5, len(unwrapped) // block)
    half_width = None
    if n_blocks >= 2:
        size = len(unwrapped) // n_blocks
        parts = (unwrapped[k * size : (k + 1) * size] for k in range(n_blocks))
        ds = [einstein_slope(*msd_upto(part, dt, last), window)[0] for part in parts]
        t = stats.t.ppf(0.5 + confidence / 2, n_blocks - 1)
        half_width = float(t * np.std(ds, ddof=1) / np.sqrt(n_blocks))
    corrected = None
    if None not in (box_length, temperature, viscosity):
        corrected = d + KB * temperature * YEH_HUMMER_XI / (6 * np.pi * viscosity * box_length * 1e-10)
    return Diffusion(
        d, half_width, n_blocks if half_width is not None else 0, log_slope, tuple(window), corrected
    )


def correlation_time(series: np.ndarray) -> float:
    """Integrated autocorrelation time of ``series``, in samples (1: uncorrelated).

    ``1 + 2 sum_k rho(k)``, summed until the autocorrelation first drops below zero (Sokal's
    simple window), from the FFT autocovariance.
    """
    x = np.asarray(series, dtype=float) - np.mean(series)
    n = len(x)
    if n < 4 or not np.any(x):
        return 1.0
    spectrum = np.fft.rfft(x, 2 * n)
    acov = np.fft.irfft(spectrum * np.conj(spectrum))[:n] / np.arange(n, 0, -1)
    rho = acov / acov[0]
    cut = np.argmax(rho[1:] <= 0) + 1 if np.any(rho[1:] <= 0) else n
    return float(max(1.0, 1 + 2 * rho[1:cut].sum()))
