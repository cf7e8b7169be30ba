"""``ilflows import-dpgen``: a DP-GEN run's ``param.json`` as an ilflows campaign spec.

Every key DP-GEN's ``run`` step reads is mapped to the spec field that does the same job
(:data:`VOCABULARY`, also the README's table), approximated with a note, or named as dropped:
nothing is silently lost.  The compositions come from the structures of ``sys_configs``: their
molecules are found by covalent bonds and matched to ilflows' ion templates.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

# DP-GEN key -> ilflows spec field (what does the same job)
VOCABULARY = {
    "type_map": "derived from system (elements in order of atomic number)",
    "init_data_prefix + init_data_sys": "initial.imports (format deepmd-npy)",
    "sys_configs_prefix + sys_configs": "explore.starts, and system (the molecules found in them)",
    "numb_models": "train.n_models",
    "default_training_param": "train.overrides (engine deepmd)",
    "model_devi_engine: lammps": "explore.engine: lammps-deepmd",
    "model_devi_dt (ps)": "explore.timestep (fs)",
    "model_devi_jobs": "explore.stages (equal consecutive jobs: one stage, max_iterations = their number)",
    "model_devi_jobs[].temps / press": "explore.stages[].temperature / pressure (the first value)",
    "model_devi_jobs[].nsteps / trj_freq": "explore.stages[].n_steps / frame_every",
    "model_devi_jobs[].ensemble": "explore.stages[].ensemble (nvt, npt)",
    "model_devi_jobs[].sys_idx": "explore.stages[].systems",
    "model_devi_f_trust_lo / _hi": "select.trust_lo / trust_hi",
    "model_devi_v_trust_lo / _hi": "select.virial_window",
    "model_devi_e_trust_lo / _hi": "select.energy_window",
    "model_devi_adapt_trust_lo, _numb_candi_f, _perc_candi_f": "select.adaptive_lo (n_candidates, percent)",
    "fp_task_max": "select.max_candidates",
    "fp_style: cp2k (+ external_input_path)": "dft.engine: cp2k-xtb (an xTB input) or cp2k-dft",
    "fp_style: vasp": "dft.engine: vasp",
}
OFF = 1e9  # a trust level this high is DP-GEN's way of switching a criterion off (1e10 in its examples)
# keys ilflows has no use for: DP-GEN's own bookkeeping
IGNORED = {"mass_map", "model_devi_skip", "model_devi_clean_traj", "shuffle_poscar", "_comment"}


def spec_from_dpgen(
    param: dict, param_dir: Path, name: str, compositions: list[dict] | None = None
) -> tuple[dict, list[str]]:
    """Return (ilflows spec as a mapping, notes on what was approximated or dropped).

    ``compositions`` (``{"ions": ..., "density": ...}`` per sys_configs entry) stand in for the
    structure files, which are then not read and not made walker starts.

    Raises
    ------
    ValueError
        A structure of sys_configs cannot be read or holds a molecule that is no ion of the library.
    """
    from ilflows.systems.starts import identify_ions

    notes: list[str] = []
    used = set(IGNORED)

    def take(key, default=None):
        used.add(key)
        return param.get(key, default)

    root = Path(param_dir)
    prefix = Path(take("sys_configs_prefix", "") or "")
    groups = []  # (ions, density, file) of the structures of each sys_configs entry
    for k, entry in enumerate(take("sys_configs", [])):
        if compositions is not None:
            groups.append([(compositions[k]["ions"], compositions[k]["density"], None)])
            continue
        patterns = entry if isinstance(entry, list) else [entry]
        files = sorted(f for pattern in patterns for f in glob.glob(str(_resolve(root, prefix / pattern))))
        groups.append([(*identify_ions(Path(f)), f) for f in files])
    if not any(groups):
        raise ValueError("sys_configs: no structure file found; ilflows needs them for the compositions")
    systems, starts, group_system = [], [], []
    for structures in groups:
        for ions, density, path in structures:
            if ions not in [s["ions"] for s in systems]:
                systems.append({"ions": ions, "density": round(density, 4)})
            if path is not None:
                starts.append(str(path))
        first = structures[0][0] if structures else None
        group_system.append(
            next(k for k, s in enumerate(systems) if s["ions"] == first) if structures else None
        )
    type_map = take("type_map", [])
    spec: dict = {"name": name, "system": systems if len(systems) > 1 else systems[0]}
    init_prefix = Path(take("init_data_prefix", "") or "")
    imports = [
        {
            "path": str(_resolve(root, init_prefix / sys)),
            "format": "deepmd-npy",
            "stage": "initial",
            "level_of_theory": f"DP-GEN fp_style {param.get('fp_style', 'not stated')}",
            "source": f"DP-GEN init_data {sys}",
        }
        for sys in take("init_data_sys", [])
    ]
    spec["initial"] = {"boxes_per_density": 0, "rattled_copies": 0, "imports": imports}
    if not imports:
        spec["initial"] = {}
        notes.append("init_data_sys: none; ilflows packs and labels its own initial boxes")
    spec["dft"] = _dft(take, root, notes)
    training = dict(take("default_training_param", {}) or {})
    training.get("model", {}).pop("type_map", None)
    training.get("training", {}).pop("training_data", None)
    spec["train"] = {"engine": "deepmd", "n_models": take("numb_models", 4), "overrides": training}
    if type_map and sorted(type_map) != sorted(_elements(systems)):
        notes.append(
            f"type_map {type_map}: ilflows' models type the elements of system, {_elements(systems)}"
        )
    engine = take("model_devi_engine", "lammps")
    if engine != "lammps":
        notes.append(f"model_devi_engine {engine!r}: not mapped; explore.engine lammps-deepmd is used")
    explore = {"engine": "lammps-deepmd", "timestep": take("model_devi_dt", 0.002) * 1000}
    if starts:
        explore["starts"] = starts
    else:
        notes.append("sys_configs: structures not read; walkers start from boxes ilflows packs")
    stages, n_jobs = _stages(take("model_devi_jobs", []), group_system, notes)
    if stages:
        explore["stages"] = stages
    spec["explore"] = explore
    spec["select"] = _select(take, notes)
    spec["guards"] = {"max_void": None}  # DP-GEN boxes are often gas-like: no vacuum check
    spec["loop"] = {"max_iterations": max(n_jobs, 1)}
    notes.append(
        "DP-GEN runs every model_devi_job; ilflows stops a stage once its accurate ratio reaches "
        "loop.accurate_ratio (0.95) and the loop at the last stage's"
    )
    if take("fp_task_min") is not None:
        notes.append("fp_task_min: dropped; ilflows labels every candidate it selects, however few")
    dropped = sorted(set(param) - used)
    if dropped:
        notes.append(f"not mapped (ilflows has no such setting): {', '.join(dropped)}")
    return spec, notes


def _resolve(root: Path, path: Path) -> Path:
    """Return a DP-GEN path: absolute, or relative to param.json's folder ``root``.

    A set-up shared as a template names its own folder by a placeholder (``PEER_DIR/confs``):
    a first part in capitals that is no folder is taken as ``root``.
    """
    first, *rest = Path(path).parts or (".",)
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", first) and not (root / first).exists():
        return root.joinpath(*rest)
    path = Path(path)
    return path if path.is_absolute() else root / path


def _elements(systems: list[dict]) -> list[str]:
    from ase.data import atomic_numbers

    from ilflows.systems.ions import load_ion

    found = {s for system in systems for ion in system["ions"] for s in load_ion(ion).get_chemical_symbols()}
    return sorted(found, key=atomic_numbers.__getitem__)


def _dft(take, root: Path, notes: list[str]) -> dict:
    style = take("fp_style", "cp2k")
    if style == "vasp":
        notes.append("fp_style vasp: fp_incar and fp_pp_files are not read; ilflows' VASP settings are used")
        for key in ("fp_incar", "fp_pp_path", "fp_pp_files"):
            take(key)
        return {"engine": "vasp"}
    if style != "cp2k":
        notes.append(f"fp_style {style!r}: not mapped; dft.engine cp2k-xtb is used")
        return {"engine": "cp2k-xtb"}
    template = take("external_input_path")
    take("user_fp_params")
    text = _resolve(root, Path(template)).read_text() if template else ""
    if "METHOD XTB" in " ".join(text.upper().split()):
        return {"engine": "cp2k-xtb"}
    notes.append(
        "fp_style cp2k: the input is not an xTB one; dft.engine cp2k-dft with its default PBE-D3(BJ) is used"
    )
    return {"engine": "cp2k-dft"}


def _stages(jobs: list[dict], group_system: list[int | None], notes: list[str]) -> tuple[list[dict], int]:
    """Map model_devi_jobs to stages: equal consecutive jobs are one stage run that many times."""
    conditions = []
    for k, job in enumerate(jobs):
        temps, press = job.get("temps", [450]), job.get("press", [1.0])
        if len(temps) > 1 or len(press) > 1:
            notes.append(f"model_devi_jobs.{k}: temps {temps} press {press}: the first of each is used")
        ensemble = str(job.get("ensemble", "nvt"))
        if ensemble not in ("nvt", "npt"):
            notes.append(f"model_devi_jobs.{k}: ensemble {ensemble!r} run as {ensemble[:3]}")
        systems = sorted({group_system[i] for i in job.get("sys_idx", []) if group_system[i] is not None})
        condition = {
            "ensemble": ensemble[:3] if ensemble[:3] in ("nvt", "npt") else "nvt",
            "temperature": float(temps[0]),
            "pressure": float(press[0]),
            "n_steps": int(job.get("nsteps", 500)),
            "frame_every": int(job.get("trj_freq", 25)),
        }
        if systems and len(set(group_system) - {None}) > 1:
            condition["systems"] = systems
        unknown = sorted(set(job) - {"temps", "press", "nsteps", "trj_freq", "ensemble", "sys_idx", "_idx"})
        if unknown:
            notes.append(f"model_devi_jobs.{k}: not mapped: {', '.join(unknown)}")
        conditions.append(condition)
    stages = []
    for condition in conditions:
        if stages and {k: v for k, v in stages[-1].items() if k != "max_iterations"} == condition:
            stages[-1]["max_iterations"] += 1
        else:
            stages.append({**condition, "max_iterations": 1})
    return stages, len(jobs)


def _select(take, notes: list[str]) -> dict:
    select = {
        "trust_lo": take("model_devi_f_trust_lo", 0.05),
        "trust_hi": take("model_devi_f_trust_hi", 0.15),
        "max_candidates": take("fp_task_max", 10),
    }
    for kind, field in (("v", "virial_window"), ("e", "energy_window")):
        lo, hi = take(f"model_devi_{kind}_trust_lo"), take(f"model_devi_{kind}_trust_hi")
        if lo is not None and hi is not None and 0 <= lo < hi < OFF:
            select[field] = [lo, hi]
        elif lo is not None or hi is not None:
            notes.append(f"model_devi_{kind}_trust_lo/hi {lo}/{hi}: DP-GEN's way of turning it off; not used")
    if take("model_devi_adapt_trust_lo"):
        select["adaptive_lo"] = {
            "n_candidates": take("model_devi_numb_candi_f", 10),
            "percent": take("model_devi_perc_candi_f", 0.0),
        }
    return select
