"""Malformed campaign specs: each is refused in one line naming the field and the fix, nothing queued."""

from __future__ import annotations

import copy

import pytest
import yaml

from ilflows.cli import main

GOOD = {
    "name": "bad",
    "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
    "initial": {"density_factors": [1.0], "boxes_per_density": 1, "rattled_copies": 0},
    "explore": {"n_walkers": 1},
    "guards": {"max_void": None},
}


def _set(path: str, value):
    """A change that sets the dotted ``path`` of the good spec (None value: delete it)."""

    def change(spec: dict) -> dict:
        *parents, leaf = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
        return spec

    return change


# (case, change or raw YAML text, what the one-line error must contain)
CASES = [
    (
        "a billion ion pairs",
        _set("system.ions", {"PYR14": 10**9, "BF4": 10**9}),
        "system.ions: the campaign would need up to 3.5e+10 atoms in a box, above the limit of 5e+03 "
        "(setting max_box_atoms); lower system.ions, or pass --force",
    ),
    (
        "10^12 MD steps",
        _set("explore.n_steps", 10**12),
        "explore.n_steps: the campaign would need up to 3e+12 MD",
    ),
    (
        "a million models",
        _set("train.n_models", 10**6),
        "train.n_models: the campaign would need up to 4e+06 trainings",
    ),
    (
        "ten million boxes",
        _set("initial.boxes_per_density", 10**7),
        "initial.boxes_per_density: the campaign would need up to 1e+07 DFT labels",
    ),
    ("unknown ion", _set("system.ions", {"XYZ": 1, "BF4": 1}), "system.ions: unknown ion 'XYZ'; known:"),
    (
        "net charge",
        _set("system.ions", {"PYR14": 2, "BF4": 1}),
        "system.ions: the box has a net charge of +1 e",
    ),
    ("zero count", _set("system.ions", {"PYR14": 0, "BF4": 1}), "system.ions: counts must be positive"),
    ("no ions", _set("system.ions", {}), "system.ions: Dictionary should have at least 1 item"),
    ("zero density", _set("system.density", 0), "system.density: Input should be greater than 0"),
    ("negative density", _set("system.density", -1.2), "system.density: Input should be greater than 0"),
    ("too dense to pack", _set("system.density", 30.0), "lower the density"),
    (
        "density not a number",
        _set("system.density", "heavy"),
        "system.density: Input should be a valid number",
    ),
    ("zero tolerance", _set("system.tolerance", 0), "system.tolerance: Input should be greater than 0"),
    (
        "stage ramp on LAMMPS",
        _set("explore.stages", [{"temperature_ramp": {"start": 300, "end": 600}}]),
        "explore.stages.0: temperature_ramp is run by the ase explorer only; set engine: ase",
    ),
    (
        "stage misspelt",
        _set("explore.stages", [{"temprature": 300}]),
        "explore.stages.0.temprature: not a field",
    ),
    (
        "small deepmd",
        _set("train.preset", "small"),
        "train.preset: Input should be 'tiny' or 'paper'",
    ),
    ("zero time limit", _set("time_limits.label", 0), "time_limits.label: Input should be greater than 0"),
    (
        "NaN temperature",
        _set("explore.temperature", float("nan")),
        "explore.temperature: Input should be a finite",
    ),
    (
        "infinite rattle",
        _set("initial.rattle_stdev", float("inf")),
        "initial.rattle_stdev: Input should be a finite",
    ),
    (
        "NaN pressure",
        _set("explore.pressure", float("nan")),
        "explore.pressure: Input should be a finite number",
    ),
    (
        "infinite trust_hi",
        _set("select.trust_hi", float("inf")),
        "select.trust_hi: Input should be a finite number",
    ),
    (
        "count given as yes",
        _set("initial.boxes_per_density", True),
        "boxes_per_density: True is a yes/no, not a number",
    ),
    (
        "duplicated key",
        "name: bad\nsystem: {ions: {PYR14: 1, BF4: 1}, density: 0.22}\n"
        "explore: {n_steps: 10}\nexplore: {n_steps: 20}\n",
        "key 'explore' is given twice (line 4); keep one",
    ),
    ("name of dots", _set("name", ".."), "name: String should match pattern"),
    ("name too long", _set("name", "x" * 300), "name: String should have at most 100 characters"),
    (
        "holdout too large",
        _set("validation.holdout_fraction", 0.7),
        "validation.holdout_fraction: Input should be less than 0.5",
    ),
    (
        "every initial label held out",  # its one box's id, bad/initial/0, hashes to 0.26
        _set("validation.holdout_fraction", 0.3),
        "validation.holdout_fraction: all 1 initial labels fall in the held-out 0.3 (chosen by frame id), "
        "so the first committee would have none to train on; lower validation.holdout_fraction or add",
    ),
    (
        "window upside down",
        _set("select", {"trust_lo": 2.0, "trust_hi": 1.5}),
        "select: trust_lo (2.0) must be",
    ),
    ("negative trust_lo", _set("select.trust_lo", -0.1), "select.trust_lo: Input should be greater than or"),
    ("zero cap", _set("select.max_candidates", 0), "select.max_candidates: Input should be greater than or"),
    (
        "negative cap",
        _set("select.max_candidates", -3),
        "select.max_candidates: Input should be greater than",
    ),
    (
        "unknown DFT engine",
        _set("dft.engine", "gaussian"),
        "dft.engine: unknown DFT engine 'gaussian'; known: cp2k-dft, cp2k-xtb, vasp",
    ),
    (
        "unknown trainer",
        _set("train.engine", "nequip"),
        "train.engine: unknown trainer 'nequip'; known: deepmd, mace",
    ),
    (
        "unknown explorer",
        _set("explore.engine", "gromacs"),
        "explore.engine: unknown explorer 'gromacs'; known: ase, lammps-deepmd",
    ),
    ("unknown ensemble", _set("explore.ensemble", "nve"), "explore.ensemble: Input should be 'nvt' or 'npt'"),
    ("bad YAML", "name: bad\nsystem: {ions: [PYR14\n", "cannot read YAML"),
    ("YAML list", "- name: bad\n", "a campaign spec is a YAML mapping with at least 'name' and 'system'"),
    (
        "steps not a number",
        _set("explore.n_steps", "many"),
        "explore.n_steps: Input should be a valid integer",
    ),
    (
        "zero frame_every",
        _set("explore.frame_every", 0),
        "explore.frame_every: Input should be greater than 0",
    ),
    ("negative timestep", _set("explore.timestep", -0.5), "explore.timestep: Input should be greater than 0"),
    ("zero walkers", _set("explore.n_walkers", 0), "explore.n_walkers: Input should be greater than or"),
    (
        "zero temperature",
        _set("explore.temperature", 0),
        "explore.temperature: Input should be greater than 0",
    ),
    ("missing name", _set("name", None), "name: required; add it"),
    ("missing system", _set("system", None), "system: required; add it"),
    ("missing density", _set("system.density", None), "system.density: required; add it"),
    ("name with spaces", _set("name", "my campaign"), "name: String should match pattern"),
    ("misspelt field", _set("explore.n_step", 10), "explore.n_step: not a field of this section; remove it"),
    ("unknown section", _set("exploer", {"n_steps": 10}), "exploer: not a field of this section; remove it"),
    ("one model", _set("train.n_models", 1), "train: a committee needs at least 2 models in all, got 1"),
    (
        "finetune DeePMD",
        _set("train.finetune", True),
        "train.finetune: not a setting of trainer deepmd; it is a setting of mace",
    ),
    (
        "MACE under LAMMPS",
        _set("train.engine", "mace"),
        "explore.engine: lammps-deepmd drives deepmd models only, train has mace; use explore.engine: ase",
    ),
    ("ramp under LAMMPS", _set("explore.temperature_ramp", {"start": 300, "end": 500}), "set engine: ase"),
    (
        "D3 under LAMMPS",
        _set("dispersion", {"cutoff": 8.0}),
        "dispersion: D3 is added on top of the committee",
    ),
    (
        "empty density list",
        _set("initial.density_factors", []),
        "initial.density_factors: List should have at",
    ),
    (
        "nothing to train on",
        _set("initial.boxes_per_density", 0),
        "initial: boxes_per_density is 0 with no md",
    ),
    ("MD frame never kept", _set("initial.md", [{"n_steps": 10, "every": 20}]), "every (20) exceeds n_steps"),
    (
        "VASP AIMD",
        lambda spec: {
            **spec,
            "dft": {"engine": "vasp"},
            "initial": {**spec["initial"], "md": [{"potential": "dft"}]},
        },
        "initial.md.0.potential: 'dft' runs AIMD with dft.engine, and vasp runs no MD; use potential: xtb "
        "(frames relabelled by vasp) or dft.engine: cp2k-dft or cp2k-xtb",
    ),
    (
        "missing import",
        _set(
            "initial.imports",
            [{"path": "nope.xyz", "format": "extxyz", "level_of_theory": "x", "source": "y"}],
        ),
        "initial.imports.0.path: cannot read",
    ),
    (
        "import format",
        _set("initial.imports", [{"path": "a.xyz", "format": "pdb"}]),
        "initial.imports.0.format",
    ),
    (
        "setting the engine ignores",
        _set("dft.encut", 500.0),
        "dft.encut: not a setting of DFT engine cp2k-xtb; it is a setting of vasp",
    ),
]


@pytest.fixture
def home(tmp_path, monkeypatch):
    from ilflows.settings import get_settings

    for key in ("ILFLOWS_BACKEND", "ILFLOWS_CONFIG_FILE", "MONGOMOCK_SERVERSTORE_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ILFLOWS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize(("case", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_spec_exits_with_one_line_naming_field_and_fix(home, capsys, case, change, expected):
    path = home / "spec.yaml"
    text = change if isinstance(change, str) else yaml.safe_dump(change(copy.deepcopy(GOOD)))
    path.write_text(text)
    for command in ("check", "run"):
        assert main([command, str(path)]) == 2
        out = capsys.readouterr()
        assert out.err.count("\n") == 1 and out.err.startswith("ilflows: error: "), out.err
        assert expected in out.err and "Traceback" not in out.err
    assert not (home / "home" / "launchpad.json").exists()  # nothing queued


def test_a_spec_file_that_is_not_text(home, capsys):
    path = home / "spec.yaml"
    path.write_bytes(bytes(range(256)))
    assert main(["check", str(path)]) == 2
    assert (
        capsys.readouterr().err == f"ilflows: error: {path}: not a text file; give the campaign's YAML spec\n"
    )


def test_a_spec_file_that_does_not_exist(home, capsys):
    assert main(["check", str(home / "nowhere.yaml")]) == 2
    assert "nowhere.yaml: cannot read YAML: [Errno 2] No such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize("variable", ["ILFLOWS_CP2K_CMD", "ILFLOWS_LMP_CMD", "ILFLOWS_PACKMOL_CMD"])
def test_a_missing_executable_is_refused_at_submit_time(home, capsys, monkeypatch, variable):
    from ilflows.settings import get_settings

    path = home / "spec.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    monkeypatch.setenv(variable, "/nonexistent/bin/engine")
    get_settings.cache_clear()
    assert main(["submit", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"ilflows: error: executable '/nonexistent/bin/engine' not found; install it (scripts/setup.sh) "
        f"or set {variable} to its path\n"
    )
    assert not (home / "home" / "launchpad.json").exists()  # refused before anything was queued


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ILFLOWS_HOME", "", "setting home = '' (ILFLOWS_HOME): is empty (a variable that was not set?)"),
        ("ILFLOWS_THREADS", "0", "setting threads = '0' (ILFLOWS_THREADS): Input should be greater than"),
        (
            "ILFLOWS_BACKEND",
            "sql",
            "setting backend = 'sql' (ILFLOWS_BACKEND): Input should be 'embedded' or",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_where_it_came_from(tmp_path, variable, value, expected):
    from cli_runs import ilflows

    proc = ilflows(["status"], tmp_path, **{variable: value})
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"ilflows: error: {expected}") and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "launchpad.json").exists()
