"""Liquid properties on synthetic trajectories whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ilflows.analysis.liquid import (
    block_average,
    centres_of_mass,
    correlation_time,
    densities,
    diffusion,
    msd,
    msd_upto,
    rdf,
)

RNG = np.random.default_rng(7)


def _wrap(positions: np.ndarray, length: float) -> np.ndarray:
    return np.mod(positions, length)


def test_rdf_of_an_ideal_gas_is_one():
    box, n = 20.0, 300
    positions = RNG.uniform(0, box, size=(40, n, 3))
    species = ["B"] * (n // 2) + ["N"] * (n // 2)
    cell = np.diag([box] * 3)
    for pair in (("B", "B"), ("B", "N")):
        result = rdf(positions, cell, species, pair, r_max=9.5, n_bins=19)
        far = result.g[result.r > 2.0]  # few pairs at short range: noisy
        assert abs(far.mean() - 1.0) < 0.03 and np.abs(far - 1.0).max() < 0.15, (pair, far)


def test_rdf_of_a_cubic_lattice_integrates_to_six_neighbours():
    a, k = 3.0, 6
    grid = np.stack(np.meshgrid(*[np.arange(k) * a] * 3, indexing="ij"), -1).reshape(-1, 3)
    result = rdf(grid[None], np.diag([a * k] * 3), ["Li"] * len(grid), ("Li", "Li"), r_max=4.0, n_bins=80)
    rho = len(grid) / (a * k) ** 3
    dr = result.r[1] - result.r[0]
    shell = result.r < 1.2 * a
    neighbours = np.sum(4 * np.pi * result.r[shell] ** 2 * rho * result.g[shell] * dr)
    assert neighbours == pytest.approx(6.0, rel=0.02)
    assert result.r[np.argmax(result.g)] == pytest.approx(a, abs=dr)


def test_rdf_refuses_a_range_beyond_half_the_box():
    with pytest.raises(ValueError, match=r"r_max: 6.0 Å exceeds half the box width \(5.00 Å\)"):
        rdf(np.zeros((1, 2, 3)), np.diag([10.0] * 3), ["B", "N"], ("B", "N"), r_max=6.0)


def test_block_average_of_a_known_series():
    est = block_average(np.array([1.0, 1.0, 3.0, 3.0]), n_blocks=2)
    assert est.mean == 2.0
    assert est.half_width == pytest.approx(12.7062, rel=1e-4)  # t(0.975, 1) * std([1, 3]) / sqrt(2)
    draws = RNG.normal(1.25, 0.01, size=(200, 1000))  # 200 series of true mean 1.25
    covered = [abs(block_average(s, 10).mean - 1.25) < block_average(s, 10).half_width for s in draws]
    assert 0.9 < np.mean(covered) <= 1.0  # a 95 % interval covers the truth about 95 % of the time


def test_density_of_a_water_box():
    cells = np.array([np.diag([3.1] * 3), np.diag([3.2] * 3)])
    rho = densities(["O", "H", "H"], cells)
    assert rho == pytest.approx(
        [18.015 / 6.02214e23 / (3.1**3 * 1e-24), 18.015 / 6.02214e23 / (3.2**3 * 1e-24)], rel=1e-4
    )


def test_centre_of_mass_of_a_molecule_split_by_the_boundary():
    box = 10.0
    atoms = np.array([[[9.5, 5.0, 5.0], [0.5, 5.0, 5.0]]])  # a C-O pair 1 Å apart across x = 0
    com = centres_of_mass(atoms, np.diag([box] * 3), ["C", "O"], [range(0, 2)])
    x = 9.5 + 1.0 * 15.999 / (12.011 + 15.999)  # from the first atom, toward the O image
    assert com[0, 0] == pytest.approx([x, 5.0, 5.0])


def test_ballistic_molecules_crossing_the_boundary_give_msd_v2_t2():
    box, dt, v = 12.0, 0.5, np.array([1.3, -0.7, 0.4])  # Å/ps: crosses the box several times
    t = np.arange(80) * dt
    start = np.array([[1.0, 2.0, 3.0], [1.8, 2.5, 3.1]])  # one diatomic molecule
    positions = _wrap(start[None] + t[:, None, None] * v, box)
    com = centres_of_mass(positions, np.diag([box] * 3), ["C", "C"], [range(2)])
    lags, values = msd(com, dt)
    assert lags[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert values == pytest.approx((v @ v) * lags**2, rel=1e-5, abs=1e-6)


def test_random_walk_gives_its_diffusion_coefficient():
    box, dt, sigma, n = 30.0, 0.1, 0.2, 500  # Å per step and axis: D = sigma^2 / (2 dt) = 0.2 Å^2/ps
    walk = np.cumsum(RNG.normal(0, sigma, size=(300, n, 3)), axis=0)
    unwrapped = centres_of_mass(
        _wrap(walk, box), np.diag([box] * 3), ["Ar"] * n, [range(i, i + 1) for i in range(n)]
    )
    assert np.allclose(unwrapped - unwrapped[0], walk - walk[0], atol=1e-6)
    lags, values = msd(unwrapped, dt)  # MDAnalysis' whole curve; the fit uses lags up to 10 ps
    assert msd_upto(unwrapped, dt, 100)[1] == pytest.approx(values[:101], rel=1e-6)  # MDAnalysis: float32
    result = diffusion(unwrapped, dt, window=(1.0, 10.0))
    assert result.d == pytest.approx(0.2e-8, rel=0.05)  # 0.2 Å^2/ps in m^2/s
    assert result.diffusive and result.log_slope == pytest.approx(1.0, abs=0.05)
    assert result.d_ci is None and result.n_blocks == 0  # 30 ps: not two blocks of twice the 10 ps window
    assert result.d_corrected is None


def test_the_error_bar_of_d_covers_the_scatter_of_replicas():
    """Replicas of a known random walk: the block interval is as wide as their scatter (the fit's
    standard error, the old error bar, was far narrower)."""
    dt, sigma, n, steps, window = 0.1, 0.2, 20, 2000, (0.5, 4.0)
    true_d = sigma**2 / (2 * dt) * 1e-8  # m^2/s
    ds, half_widths, fit_errors = [], [], []
    for _ in range(12):
        walk = np.cumsum(RNG.normal(0, sigma, size=(steps, n, 3)), axis=0)
        result = diffusion(walk, dt, window)
        ds.append(result.d)
        half_widths.append(result.d_ci)
        lags, values = msd_upto(walk, dt, 40)
        inside = (lags >= window[0]) & (lags <= window[1])
        fit_errors.append(stats.linregress(lags[inside], values[inside]).stderr / 6 * 1e-8)
    scatter = np.std(ds, ddof=1)
    assert all(h is not None for h in half_widths) and result.n_blocks == 5
    assert 0.5 < np.mean(half_widths) / (1.96 * scatter) < 2.5  # a 95 % interval of the replicas' spread
    covered = np.mean(np.abs(np.array(ds) - true_d) <= np.array(half_widths))
    assert covered >= 0.75  # about 95 % expected; 12 replicas
    assert np.mean(fit_errors) < 0.2 * scatter  # why the fit's standard error is no error bar


def test_a_ballistic_window_is_flagged():
    dt, v = 0.01, np.array([1.3, -0.7, 0.4])  # Å/ps, free flight
    t = np.arange(400) * dt
    flight = t[:, None, None] * v + RNG.normal(0, 1e-3, size=(400, 3, 3))
    result = diffusion(flight, dt, window=(0.01, 0.05))
    assert result.log_slope == pytest.approx(2.0, abs=0.1) and not result.diffusive


def test_correlation_time_of_an_autoregressive_series():
    phi, n = 0.9, 200_000  # AR(1): integrated autocorrelation time (1 + phi) / (1 - phi) = 19
    noise = RNG.normal(size=n)
    x = np.empty(n)
    x[0] = 0.0
    for k in range(1, n):
        x[k] = phi * x[k - 1] + noise[k]
    assert correlation_time(x) == pytest.approx(19.0, rel=0.15)
    assert correlation_time(RNG.normal(size=5000)) == pytest.approx(1.0, abs=0.2)


def test_finite_size_correction_is_yeh_hummer():
    walk = np.cumsum(RNG.normal(0, 0.2, size=(300, 50, 3)), axis=0)
    result = diffusion(walk, 0.1, window=(1, 9), box_length=20.0, temperature=300.0, viscosity=0.05)
    kt_xi = 1.380649e-23 * 300.0 * 2.837297
    assert result.d_corrected - result.d == pytest.approx(kt_xi / (6 * np.pi * 0.05 * 20e-10))


def test_diffusion_needs_a_window_with_points():
    with pytest.raises(ValueError, match=r"window: \(20, 30\) ps holds 0 lag times"):
        diffusion(np.zeros((10, 1, 3)), 1.0, window=(20, 30))
