"""The shipped campaign specs validate, state the papers' protocols, and scale down with --local."""

from pathlib import Path

import pytest
import yaml

from ilflows.schemas.campaign import CampaignSpec, SpecError, load_spec

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_validates(path):
    spec = load_spec(path)
    assert spec.name and sum(spec.system[0].ions.values()) >= 2


def test_pyr14bf4_spec_states_paper_1_protocol():
    spec = load_spec(WORKFLOWS / "pyr14bf4_dpgen.yaml")
    assert spec.system[0].ions == {"BF4": 10, "PYR14": 10}
    assert (
        spec.explore.ensemble,
        spec.explore.temperature,
        spec.explore.n_steps,
        spec.explore.frame_every,
    ) == (
        "npt",
        450,
        100_000,
        1000,
    )
    assert (spec.select.trust_lo, spec.select.trust_hi) == (0.05, 1.5)
    assert (spec.train[0].preset, spec.train[0].n_models) == ("paper", 4)
    assert (spec.dft.engine, spec.dft.functional, spec.dft.dispersion, spec.dft.encut, spec.dft.ediff) == (
        "vasp",
        "PBE",
        "D3",
        450.0,
        1e-6,
    )
    assert min(spec.initial.density_factors) == 0.77 and max(spec.initial.density_factors) == 1.26


def test_local_switch_scales_the_campaign_down():
    spec = load_spec(WORKFLOWS / "pyr14bf4_dpgen.yaml", local=True)
    assert spec.name == "pyr14bf4-dpgen-local"
    assert spec.system[0].ions == {"BF4": 1, "PYR14": 1} and spec.dft.engine == "cp2k-xtb"
    assert (spec.train[0].preset, spec.explore.ensemble, spec.loop.max_iterations) == ("tiny", "nvt", 4)
    assert (spec.select.trust_lo, spec.select.trust_hi) == (0.05, 1.5)  # the rule is the paper's


def test_local_switch_needs_a_local_section():
    with pytest.raises(SpecError, match="local: --local needs a 'local:' mapping"):
        load_spec(WORKFLOWS / "peer_pyr14bf4.yaml", local=True)


def test_validation_boxes_must_not_reuse_training_seeds(tmp_path):
    path = tmp_path / "overlap.yaml"
    path.write_text(
        (WORKFLOWS / "peer_pyr14bf4.yaml").read_text() + "validation: {boxes_per_density: 2, seed: 10}\n"
    )
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(err.value).endswith(
        "validation.seed 10 reuses seeds of the training boxes (7-20); pick a seed of 21 or more"
    )


@pytest.mark.parametrize(
    ("md", "message"),
    [
        (
            "{potential: dft}",
            "initial.md.0.potential: 'dft' runs AIMD with dft.engine, and vasp runs no MD; use "
            "potential: xtb (frames relabelled by vasp) or dft.engine: cp2k-dft or cp2k-xtb",
        ),
        ("{n_steps: 10, every: 20}", "initial.md.0: every (20) exceeds n_steps (10): no frame is kept"),
    ],
)
def test_initial_md_entries_are_checked_before_queueing(tmp_path, md, message):
    spec = yaml.safe_load((WORKFLOWS / "pyr14bf4_dpgen.yaml").read_text())
    spec["initial"]["md"] = [yaml.safe_load(md)]
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(err.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("explore", "message"),
    [
        (
            {"stop_deviation": 0.5},
            "explore: stop_deviation is run by the ase explorer only; set engine: ase",
        ),
        (
            {"engine": "ase", "ensemble": "npt", "temperature_ramp": {"start": 230, "end": 500}},
            "explore: temperature_ramp drives an NVT run (Bussi thermostat, scaled cell); set ensemble: nvt",
        ),
    ],
)
def test_dynamics_modifiers_are_checked_before_queueing(tmp_path, explore, message):
    spec = yaml.safe_load((WORKFLOWS / "peer_pyr14bf4.yaml").read_text())
    spec["explore"] = {**spec.get("explore", {}), **explore}
    path = tmp_path / "modifiers.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(err.value) == f"{path}: {message}"


def test_a_spec_is_known_by_what_it_sets_apart_from_the_defaults():
    from ilflows.queue_admin import spec_digest

    base = {"name": "d", "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22}}
    spec = CampaignSpec.model_validate(base)
    spelled_out = CampaignSpec.model_validate({**base, "validation": {"holdout_fraction": 0.1}})  # default
    assert spec_digest(spec) == spec_digest(spelled_out)
    other = CampaignSpec.model_validate({**base, "validation": {"holdout_fraction": 0.2}})
    assert spec_digest(other) != spec_digest(spec)


def test_cost_estimate_counts_the_demo_by_hand():
    from ilflows.schemas.cost import estimate

    cost = estimate(load_spec(WORKFLOWS / "demo.yaml"))
    # PYR14+ C9H20N (30 atoms) + BF4- (5); 3 density factors x 2 boxes x (box + 1 rattled copy),
    # 100-step MD every 5 steps (21 frames) for the initial and validation sets, 8 iterations x 14
    # candidates; 2 members trained in iteration 0 and after each of 8 iterations
    assert (cost.box_atoms, cost.labels, cost.trainings) == (35, 12 + 21 + 21 + 112, 2 * 9)
    assert cost.md_steps == 100 + 100 + 8 * 4 * 300


def test_a_costly_spec_is_queued_with_force_only(tmp_path, monkeypatch, capsys):
    from ilflows.cli import main
    from ilflows.settings import get_settings

    monkeypatch.setenv("ILFLOWS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ILFLOWS_MAX_LABELS", "100")
    get_settings.cache_clear()
    try:
        assert main(["check", str(WORKFLOWS / "demo.yaml")]) == 2
        assert (
            "select.max_candidates: the campaign would need up to 166 DFT labels" in capsys.readouterr().err
        )
        assert main(["check", "--force", str(WORKFLOWS / "demo.yaml")]) == 0
    finally:
        get_settings.cache_clear()
