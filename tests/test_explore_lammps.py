"""LAMMPS + DeePMD explorer: deviations match DeepPot, NPT on two MPI ranks, inputs, parsing."""

from __future__ import annotations

import numpy as np
import pytest

from ilflows.explore import EXPLORERS, get_explorer
from ilflows.explore.lammps_deepmd import _cell_from_bounds, lammps_data
from ilflows.schemas.frames import Frame
from ilflows.select import max_force_deviation


@pytest.mark.slow
def test_nvt_deviation_matches_deeppot(tiny_models, peer_labels, type_map, model_forces, tmp_path):
    spec = EXPLORERS.section(
        dict(ensemble="nvt", temperature=450.0, n_steps=100, timestep=0.5, frame_every=10)
    )
    result = get_explorer("lammps-deepmd").explore(
        tiny_models, peer_labels[0].frame, type_map, spec, seed=5, workdir=tmp_path, energy_deviation=True
    )
    traj = result.trajectory
    assert traj.steps == list(range(0, 101, 10)) and len(result.deviations) == 11
    assert traj.species == peer_labels[0].frame.species
    assert result.pressure is None and result.parameters["seed"] == 5
    assert not np.allclose(traj.positions[0], traj.positions[-1])
    frames = [traj.frame(i) for i in range(len(traj.steps))]
    expected = max_force_deviation(model_forces(tiny_models, frames))
    assert (expected > 0).all()
    # model_devi.out has 7 significant digits; the dump carries positions exactly.
    np.testing.assert_allclose(result.deviations, expected, rtol=1e-6, atol=1e-5)
    # virial (LAMMPS) and energy (ilflows, after the run) deviations against DeePMD's own model_devi
    from deepmd.infer import DeepPot
    from deepmd.infer.model_devi import calc_model_devi

    pots = [DeepPot(str(m.write(tmp_path / f"check{k}.pb"))) for k, m in enumerate(tiny_models)]
    coords = np.array([f.positions for f in frames]).reshape(len(frames), -1)
    cells = np.array([f.cell for f in frames]).reshape(len(frames), 9)
    atype = [type_map.index(s) for s in traj.species]
    table = calc_model_devi(
        coords, cells, atype, pots
    )  # step, max/min/avg devi_v, max/min/avg devi_f, devi_e
    np.testing.assert_allclose(result.virial_deviations, table[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.energy_deviations, table[:, 7], rtol=1e-6, atol=1e-9)


def test_data_file_triclinic_and_rotated_cells():
    frame = Frame(
        species=["F", "H"],
        positions=[[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]],
        cell=[[10, 0, 0], [1, 9, 0], [2, 3, 8]],
    )
    text = lammps_data(frame, ["H", "B", "C", "N", "F"])
    assert "5 atom types" in text and "1 2 3 xy xz yz" in text
    assert "1 5 0.10000000000000001 0.20000000000000001 0.29999999999999999" in text
    rotated = frame.model_copy(update={"cell": [[0, 10, 0], [9, 0, 0], [0, 0, 8]]})
    with pytest.raises(ValueError, match="not LAMMPS-ready"):
        lammps_data(rotated, ["H", "F"])


def test_cell_from_dump_bounds():
    xy, xz, yz, origin = -1.5, 2.0, 0.5, np.array([0.3, -0.2, 0.1])
    lx, ly, lz = 10.0, 9.0, 8.0
    # LAMMPS writes the bounding box of the tilted cell plus the tilts.
    bounds = np.array(
        [
            [origin[0] + min(0, xy, xz, xy + xz), origin[0] + lx + max(0, xy, xz, xy + xz), xy],
            [origin[1] + min(0, yz), origin[1] + ly + max(0, yz), xz],
            [origin[2], origin[2] + lz, yz],
        ]
    )
    cell, found = _cell_from_bounds(bounds)
    np.testing.assert_allclose(cell, [[lx, 0, 0], [xy, ly, 0], [xz, yz, lz]])
    np.testing.assert_allclose(found, origin)
    cell, found = _cell_from_bounds(np.array([[0, 12], [1, 11], [0, 5]], dtype=float))
    np.testing.assert_allclose(cell, np.diag([12, 10, 5]))


def test_unknown_explorer_and_bad_seed(peer_labels, type_map, tmp_path):
    with pytest.raises(ValueError, match="known: ase, lammps-deepmd"):
        get_explorer("gromacs")
    with pytest.raises(ValueError, match="positive 31-bit"):
        get_explorer("lammps-deepmd").explore(
            [], peer_labels[0].frame, type_map, EXPLORERS.section(), 0, tmp_path
        )


def test_missing_frames_raise(monkeypatch, peer_labels, type_map, tmp_path):
    """A run that stops early (MD blew up) must not return misaligned frames and deviations."""
    from ilflows.explore import lammps_deepmd
    from ilflows.schemas.records import ModelFile

    def short_run(workdir):
        (workdir / "traj.dump").write_text("")
        (workdir / "model_devi.out").write_text("# step\n0 0 0 0 0.1 0 0\n")
        return 0.0

    monkeypatch.setattr(lammps_deepmd, "run_lammps", short_run)
    (tmp_path / "m.pb").write_bytes(b"model")
    models = [ModelFile.from_path(tmp_path / "m.pb")] * 2
    spec = EXPLORERS.section(dict(n_steps=20, frame_every=10))
    with pytest.raises(lammps_deepmd.EngineError, match="0 frames and 1 deviations, expected 3"):
        lammps_deepmd.LammpsDeepmd().explore(models, peer_labels[0].frame, type_map, spec, 1, tmp_path / "md")


@pytest.mark.slow
def test_npt_on_two_mpi_ranks_changes_the_cell(
    tiny_models, peer_labels, type_map, model_forces, tmp_path, monkeypatch
):
    """NPT moves the cell, on two ranks of the MPI launcher PyPI's LAMMPS was built with (ILFLOWS_LMP_CMD).

    One LAMMPS run for both: the ranks split the box whatever the ensemble; the NVT test runs serial.
    """
    import shlex
    import sys
    from pathlib import Path

    from ilflows.settings import get_settings

    venv = Path(sys.executable).parent
    if not (venv / "mpiexec").exists():
        pytest.skip("no MPICH mpiexec beside the venv's lmp")
    lmp = get_settings().lmp_cmd  # the venv's LAMMPS as the campaign runs it
    monkeypatch.setenv("ILFLOWS_LMP_CMD", shlex.join([str(venv / "mpiexec"), "-n", "2", lmp]))
    get_settings.cache_clear()
    spec = EXPLORERS.section(
        dict(ensemble="npt", temperature=450.0, pressure=1.0, n_steps=100, frame_every=20)
    )
    try:
        result = get_explorer("lammps-deepmd").explore(
            tiny_models, peer_labels[0].frame, type_map, spec, seed=6, workdir=tmp_path
        )
    finally:
        get_settings.cache_clear()
    logs = "".join(path.read_text() for path in tmp_path.glob("*.log*"))
    assert "with 2 MPI tasks" in logs
    cells = np.array(result.trajectory.cells)
    assert result.pressure == 1.0 and cells.shape == (6, 3, 3)
    np.testing.assert_allclose(cells[0], np.eye(3) * 12.0)
    assert not np.allclose(cells[-1], cells[0], rtol=0, atol=1e-8)
    # iso barostat: the cube stays a cube
    np.testing.assert_allclose(np.diag(cells[-1]), cells[-1][0, 0])
    assert "iso 1.0 1.0" in (tmp_path / "in.lammps").read_text()
    # the deviation of each frame, as the two ranks wrote it, is the committee's on its positions and cell
    traj = result.trajectory
    assert traj.steps == [0, 20, 40, 60, 80, 100]
    frames = [traj.frame(i) for i in range(len(traj.steps))]
    expected = max_force_deviation(model_forces(tiny_models, frames))
    np.testing.assert_allclose(result.deviations, expected, rtol=1e-6, atol=1e-5)
