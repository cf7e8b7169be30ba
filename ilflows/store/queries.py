"""Read campaign records back from the JobStore with plain maggma queries."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np


def outputs(
    store, kind: str, campaign: str | None, extra: dict | None = None, fields=None, load: bool = False
) -> list[dict]:
    """Return the outputs of one kind of record (``fields`` only, if given; ``load``: data-store ones too)."""
    criteria = {"output.kind": kind, **(extra or {})}
    if campaign is not None:
        criteria["output.campaign"] = campaign
    properties = None if fields is None else [f"output.{f}" for f in fields]
    docs = store.query(criteria=criteria, properties=properties, load=load)
    if fields is None:
        return [d["output"] for d in docs]
    return [{f: _field(d["output"], f) for f in fields} for d in docs]  # columns in the order asked


def _field(doc: dict, dotted: str):
    """``doc``'s value at a dotted path ('frame.species'), None where it is missing."""
    for key in dotted.split("."):
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def natural(text: str) -> tuple:
    """Sort key that orders the numbers in ``text`` by value: f2 before f10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def campaigns(store) -> list[str]:
    """Names of the campaigns with records in the store."""
    return sorted(store.docs_store.distinct("output.campaign", criteria={"output.kind": "initial_set"}))


LABEL_FIELDS = [
    "frame_id",
    "iteration",
    "converged",
    "error",
    "energy",
    "engine",
    "wall_time",
    "origin",
    "frame.species",  # the atom count, without the positions
]


def labels(store, campaign: str | None = None, iteration: int | None = None) -> list[dict]:
    """One row per DFT label: identity, origin, energy per atom and outcome."""
    extra = {} if iteration is None else {"output.iteration": iteration}
    rows = []
    for out in outputs(store, "dft_label", campaign, extra, LABEL_FIELDS):
        n_atoms = len(out["frame.species"])
        rows.append(
            {
                "frame_id": out["frame_id"],
                "iteration": out["iteration"],
                "converged": out["converged"],
                "energy_per_atom_eV": None if out["energy"] is None else out["energy"] / n_atoms,
                "n_atoms": n_atoms,
                "method": out["origin"]["method"],
                "deviation_eV_A": out["origin"].get("deviation"),
                "engine": out["engine"],
                "wall_time_s": round(out["wall_time"], 3),
                "error": out["error"],
            }
        )
    return sorted(rows, key=lambda r: (r["iteration"], natural(r["frame_id"])))


def trainings(store, campaign: str | None = None) -> list[dict]:
    """One row per trained model; the trainer's own last-step errors are named as such.

    Errors on every training and held-out label are the scoring job's (:func:`validations`).
    """
    fields = ["iteration", "member", "seed", "engine", "n_frames", "n_held_out"]
    fields += ["rmse_energy", "rmse_force", "wall_time"]
    rows = [
        {
            **{f: out.get(f) for f in fields[:6]},
            "last_step_rmse_e_meV_atom": out["rmse_energy"] * 1000,
            "last_step_rmse_f_eV_A": out["rmse_force"],
            "wall_time_s": out["wall_time"],
        }
        for out in outputs(store, "training", campaign, fields=fields)
    ]
    return sorted(rows, key=lambda r: (r["iteration"], r["member"]))


def validations(store, campaign: str | None = None) -> list[dict]:
    """One row per iteration, label set, model and subset.

    Label sets: training, held out, validation; models: each member, then their mean; subsets:
    EQ, nEQ, all.
    """
    rows = []
    for out in outputs(store, "validation", campaign, fields=["campaign", "iteration", "metrics"]):
        for m in out["metrics"]:
            rows.append(
                {
                    "campaign": out["campaign"],
                    "iteration": out["iteration"],
                    "label_set": m.get("label_set", "validation"),
                    "model": m["model"],
                    "subset": m["subset"],
                    "n_frames": m["n_frames"],
                    "energy_rmse_meV_atom": m["energy_rmse"] * 1000,
                    "energy_mae_meV_atom": m["energy_mae"] * 1000,
                    "force_rmse_eV_A": m["force_rmse"],
                    "force_mae_eV_A": m["force_mae"],
                }
            )
    order = {"EQ": 0, "nEQ": 1, "all": 2}
    sets = {"training": 0, "held_out": 1, "validation": 2}
    return sorted(
        rows,
        key=lambda r: (
            r["campaign"],
            r["iteration"],
            sets[r["label_set"]],
            r["model"] == "mean",
            r["model"],
            order[r["subset"]],
        ),
    )


def properties(store, campaign: str | None = None) -> list[dict]:
    """One row per production run: its models, density with its interval, diffusion per ion, populations."""
    fields = [
        "campaign",
        "run",
        "iteration",
        "ensemble",
        "temperature",
        "n_frames",
        "time_span",
        "max_deviation",
    ]
    fields += [
        "density",
        "density_ci",
        "diffusion",
        "li_clusters",
        "tfsi_conformers",
        "pyr14_butyl",
        "model_sha256",
    ]
    rows = []
    for out in outputs(store, "properties", campaign, fields=fields):
        row = {f: out[f] for f in fields[:10]}
        row["models"] = ",".join(sha[:12] for sha in out["model_sha256"])
        for d in out["diffusion"]:
            row[f"D_{d['ion']}_m2_s"] = d["d"]
        for key in ("li_clusters", "tfsi_conformers", "pyr14_butyl"):
            row |= {f"{key}_{name}": share for name, share in out[key].items()}
        rows.append(row)
    return sorted(rows, key=lambda r: (r["campaign"], r["run"]))


def explorations(store, campaign: str | None = None) -> list[dict]:
    """One row per MD exploration, with its deviation summary (units in the keys)."""
    fields = [
        "iteration",
        "walker",
        "engine",
        "ensemble",
        "temperature",
        "n_steps",
        "deviations",
        "wall_time",
    ]
    rows = []
    for out in outputs(store, "exploration", campaign, fields=fields):
        dev = np.asarray(out["deviations"], dtype=float)
        rows.append(
            {
                **{key: out[key] for key in ("iteration", "walker", "engine", "ensemble")},
                "temperature_K": out["temperature"],
                "n_steps": out["n_steps"],
                "n_frames": int(dev.size),
                "median_deviation_eV_A": float(np.nanmedian(dev)) if dev.size else None,
                "max_deviation_eV_A": float(np.nanmax(dev)) if dev.size else None,
                "wall_time_s": out["wall_time"],
            }
        )
    return sorted(rows, key=lambda r: (r["iteration"], r["walker"]))


def frames_by_deviation(store, campaign: str | None, lo: float, hi: float) -> list[dict]:
    """Explored frames with ``lo <= deviation < hi`` (eV/Å)."""
    fields = ["campaign", "iteration", "walker", "deviations", "frame_every"]
    rows = []
    for out in outputs(store, "exploration", campaign, fields=fields):
        dev = np.asarray(out["deviations"], dtype=float)
        for index in np.flatnonzero((dev >= lo) & (dev < hi)):
            rows.append(
                {
                    "campaign": out["campaign"],
                    "iteration": out["iteration"],
                    "walker": out["walker"],
                    "frame_index": int(index),
                    "md_step": int(index) * out["frame_every"],
                    "deviation_eV_A": float(dev[index]),
                }
            )
    return sorted(rows, key=lambda r: (r["iteration"], r["walker"], r["frame_index"]))


@dataclass
class IterationRow:
    """One line of the per-iteration table; errors are the ensemble mean's, on every label of their set."""

    iteration: int
    stage: str  # exploration stage (explore.stages)
    trained_on: int  # converged labels the committee trained on
    held_out: int  # converged labels held out of training (validation.holdout_fraction)
    failed_labels: int
    frames: int
    accurate: int
    candidate: int
    failed: int
    accurate_ratio: float
    trust_lo_eV_A: float  # the lower edge used (select.adaptive_lo raises it)
    flagged: int
    repeated: int  # candidates labelled before (e.g. a walker's start box again): left out
    selected: int
    devi_median_eV_A: float | None  # median max force deviation of the explored frames
    devi_floor_eV_A: float | None  # median deviation on the committee's own training frames
    train_rmse_f_eV_A: float | None  # on every training label
    heldout_rmse_f_eV_A: float | None  # on the held-out labels
    heldout_rmse_e_meV_atom: float | None
    val_rmse_f_eV_A: float | None  # on the validation set
    val_rmse_e_meV_atom: float | None
    converged: bool
    stop_reason: str | None


def iteration_table(store, campaign: str) -> list[IterationRow]:
    """Return one row per iteration.

    Labels trained on, held out and left out (failed), window counts, candidates flagged by the
    guards or labelled before, frames sent to DFT, the median deviation of the explored frames
    and of the committee on its own training frames, and the ensemble mean's force and energy
    errors on all its training labels, on the held-out labels and on the validation set.
    """
    mean: dict[tuple[int, str], dict] = {
        (v["iteration"], v["label_set"]): v
        for v in validations(store, campaign)
        if (v["model"], v["subset"]) == ("mean", "all")
    }

    def error(s: dict, label_set: str, key: str) -> float | None:
        return mean.get((s["iteration"], label_set), {}).get(key)

    rows = []
    for s in sorted(outputs(store, "selection", campaign), key=lambda s: s["iteration"]):
        rows.append(
            IterationRow(
                iteration=s["iteration"],
                stage=s.get("stage_name", "stage 0"),
                trained_on=s["n_labels"],
                held_out=s.get("n_held_out", 0),
                failed_labels=s["n_failed_labels"],
                frames=s["n_frames"],
                accurate=s["n_accurate"],
                candidate=s["n_candidate"],
                failed=s["n_failed"],
                accurate_ratio=s["accurate_ratio"],
                trust_lo_eV_A=s["trust_lo"],
                flagged=s["n_flagged"],
                repeated=s.get("n_repeated", 0),
                selected=len(s["selected"]),
                devi_median_eV_A=s.get("deviation_median"),
                devi_floor_eV_A=s.get("deviation_floor"),
                train_rmse_f_eV_A=error(s, "training", "force_rmse_eV_A"),
                heldout_rmse_f_eV_A=error(s, "held_out", "force_rmse_eV_A"),
                heldout_rmse_e_meV_atom=error(s, "held_out", "energy_rmse_meV_atom"),
                val_rmse_f_eV_A=error(s, "validation", "force_rmse_eV_A"),
                val_rmse_e_meV_atom=error(s, "validation", "energy_rmse_meV_atom"),
                converged=s["converged"],
                stop_reason=s["stop_reason"],
            )
        )
    return rows


# each query's columns, for the header of an empty CSV (properties add a D column per ion)
COLUMNS = {
    "labels": ["frame_id", "iteration", "converged", "energy_per_atom_eV", "n_atoms", "method"]
    + ["deviation_eV_A", "engine", "wall_time_s", "error"],
    "trainings": ["iteration", "member", "seed", "engine", "n_frames", "n_held_out"]
    + ["last_step_rmse_e_meV_atom", "last_step_rmse_f_eV_A", "wall_time_s"],
    "explorations": ["iteration", "walker", "engine", "ensemble", "temperature_K", "n_steps", "n_frames"]
    + ["median_deviation_eV_A", "max_deviation_eV_A", "wall_time_s"],
    "validation": [
        "campaign",
        "iteration",
        "label_set",
        "model",
        "subset",
        "n_frames",
        "energy_rmse_meV_atom",
    ]
    + ["energy_mae_meV_atom", "force_rmse_eV_A", "force_mae_eV_A"],
    "properties": ["campaign", "run", "iteration", "ensemble", "temperature", "n_frames", "time_span"]
    + ["max_deviation", "density", "density_ci", "models"],
    "frames": ["campaign", "iteration", "walker", "frame_index", "md_step", "deviation_eV_A"],
}

# the per-iteration table in two parts that each fit a page or terminal: what was explored,
# and how good the models are
EXPLORED = [
    "iteration",
    "stage",
    "frames",
    "accurate",
    "candidate",
    "failed",
    "accurate_ratio",
    "trust_lo_eV_A",
]
EXPLORED += ["flagged", "repeated", "selected", "devi_median_eV_A", "stop_reason"]
ERRORS = ["iteration", "trained_on", "held_out", "failed_labels", "train_rmse_f_eV_A", "heldout_rmse_f_eV_A"]
ERRORS += ["heldout_rmse_e_meV_atom", "val_rmse_f_eV_A", "val_rmse_e_meV_atom", "devi_floor_eV_A"]


def format_value(value) -> str:
    """Format a table cell: floats to 4 significant digits, None as '-'."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def format_table(rows: list[dict]) -> str:
    """Plain-text table of dict rows, columns in first-row order."""
    if not rows:
        return "(none)"
    cols = list(rows[0])
    body = [[format_value(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)).rstrip() for b in body]
    return "\n".join(lines)


def table_rows(rows: list[IterationRow]) -> list[dict]:
    """Return iteration rows as dicts for printing or JSON."""
    return [asdict(r) for r in rows]
