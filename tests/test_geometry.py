"""The one geometry and units module against independent figures and the formulas it replaced."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

from ilflows.geometry import (
    cell_widths,
    mass_density,
    minimum_image,
    nearest_image,
    species_mass,
    volume_at_density,
)

SHEARED = np.array([[10.0, 0.0, 0.0], [5.0, 10.0, 0.0], [1.0, 2.0, 12.0]])


def test_a_thousand_waters_in_a_31_angstrom_cube_weigh_one_gram_per_cm3():
    water = ["O", "H", "H"] * 1000
    assert species_mass(water) == pytest.approx(18.015 * 1000, rel=1e-4)
    assert mass_density(species_mass(water), 31.04**3) == pytest.approx(1.000, abs=1e-3)


def test_density_matches_the_codata_2019_copy_it_replaced():
    mass, volumes = species_mass(["Li", "C", "F"] * 7), np.array([900.0, 1234.5])
    old = mass / 6.02214076e23 / (volumes * 1e-24)  # analysis/liquid.py's own constant
    np.testing.assert_allclose(mass_density(mass, volumes), old, rtol=1e-7)
    assert mass_density(mass, volume_at_density(mass, 1.31)) == pytest.approx(1.31, rel=1e-12)


def test_cell_widths_are_the_distances_between_opposite_faces():
    a, b, c = SHEARED
    # width along a: a's distance from the plane of b and c, from the angles alone
    normal = np.cross(b, c) / np.linalg.norm(np.cross(b, c))
    assert cell_widths(SHEARED)[0] == pytest.approx(abs(a @ normal))
    np.testing.assert_allclose(cell_widths(np.diag([7.0, 8.0, 9.0])), [7.0, 8.0, 9.0])
    stacked = cell_widths(np.stack([SHEARED, 2 * SHEARED]))
    np.testing.assert_allclose(stacked[1], 2 * stacked[0])
    # the old guards formula (rows 1, 2 crossed) gives the same widths
    faces = np.cross(SHEARED[[1, 2, 0]], SHEARED[[2, 0, 1]])
    old = abs(np.linalg.det(SHEARED)) / np.linalg.norm(faces, axis=1)
    np.testing.assert_allclose(cell_widths(SHEARED), old)


def test_the_minimum_image_is_the_shortest_of_all_images():
    rng = np.random.default_rng(3)
    limit = cell_widths(SHEARED).min() / 2
    images = np.array(list(product(range(-5, 6), repeat=3))) @ SHEARED
    short = rng.normal(size=(200, 3))
    short *= (rng.uniform(0, limit, 200) / np.linalg.norm(short, axis=1))[:, None]
    shifted = short + rng.integers(-3, 4, size=(200, 3)) @ SHEARED  # the same vectors, far images
    brute = np.linalg.norm(shifted[:, None, :] + images[None], axis=-1).min(axis=1)
    wrapped = minimum_image(shifted[None], SHEARED[None])[0]
    np.testing.assert_allclose(np.linalg.norm(wrapped, axis=1), brute, atol=1e-9)
    np.testing.assert_allclose(wrapped, short, atol=1e-9)
    fractional = nearest_image(shifted @ np.linalg.inv(SHEARED))
    np.testing.assert_allclose(fractional @ SHEARED, short, atol=1e-9)
    assert minimum_image(shifted, None) is shifted  # no cell: no periodicity


def test_close_pairs_are_those_of_ase_neighbour_list_in_a_sheared_cell():
    from ase.neighborlist import neighbor_list

    from ilflows.geometry import close_pairs, wrapped_fractional

    rng = np.random.default_rng(3)
    positions = rng.random((150, 3)) @ SHEARED - 4.0  # outside the cell too: wrapped first
    i, j, d = close_pairs(wrapped_fractional(positions, SHEARED), SHEARED, 2.5)
    ai, aj, ad = neighbor_list("ijd", _atoms(positions), 2.5)
    upper = ai < aj
    expected = sorted(zip(ai[upper], aj[upper], ad[upper], strict=True))
    found = sorted(zip(i, j, d, strict=True))
    assert len(found) == len(expected) > 20
    np.testing.assert_array_equal([p[:2] for p in found], [p[:2] for p in expected])
    np.testing.assert_allclose([p[2] for p in found], [p[2] for p in expected], atol=1e-4)


def _atoms(positions):
    from ase import Atoms

    return Atoms(["H"] * len(positions), positions=positions, cell=SHEARED, pbc=True)
