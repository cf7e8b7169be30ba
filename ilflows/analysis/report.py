"""``ilflows report``: one self-contained HTML page of a campaign, with its figures as PNGs beside it.

The page holds the per-iteration table, the deviation histogram of each iteration with the
trust window marked, the learning curves of every member, parity plots (scatter, not density
meshes: outliers must show) of the validation of each iteration, and the production results:
densities and diffusion coefficients with error bars, RDFs and conformer/cluster populations.  Figures are
written as PNG files and embedded in the page as data URIs, so the HTML alone can be mailed.
Everything is read from the JobStore; nothing is recomputed.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ilflows.store.queries import ERRORS, EXPLORED, format_value, iteration_table, outputs, table_rows


@dataclass
class Figure:
    """One PNG of the report."""

    file: str  # name of the PNG beside the page
    caption: str


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def deviation_figure(store, campaign: str, folder: Path) -> Figure | None:
    """Histogram of the explored frames' max force deviation per iteration, trust window shaded."""
    explorations = outputs(store, "exploration", campaign)
    selections = {s["iteration"]: s for s in outputs(store, "selection", campaign)}
    if not explorations:
        return None
    plt = _pyplot()
    by_iteration: dict[int, list[float]] = {}
    for e in explorations:
        by_iteration.setdefault(e["iteration"], []).extend(e["deviations"])
    window = next(iter(selections.values()), None)
    values = np.concatenate([np.asarray(v, dtype=float) for v in by_iteration.values()])
    edges = [v for v in values if np.isfinite(v) and v > 0]
    if window:  # the whole window shows, however narrow the deviations
        edges += [window["trust_lo"] / 2, window["trust_hi"] * 2]
    bins = np.geomspace(min(edges, default=1e-3), max(edges, default=1.0) * 1.01, 50)
    fig, ax = plt.subplots(figsize=(7, 4))
    for iteration in sorted(by_iteration):
        ax.hist(by_iteration[iteration], bins=bins, histtype="step", lw=1.5, label=f"iteration {iteration}")
    if window:
        ax.axvspan(
            window["trust_lo"], window["trust_hi"], color="tab:green", alpha=0.12, label="trust window"
        )
    ax.set(xscale="log", xlabel="max force deviation (eV/Å)", ylabel="frames")
    ax.legend(frameon=False, fontsize=8)
    return _save(
        fig,
        folder / "deviations.png",
        "Max force deviation of the explored frames per iteration; "
        "frames in the shaded trust window are candidates for DFT.",
    )


def learning_curve_figure(store, campaign: str, folder: Path) -> Figure | None:
    """Training force RMSE (or loss) against step, one line per member, one panel per iteration."""
    fields = ["iteration", "member", "engine", "learning_curve"]
    runs = outputs(store, "training", campaign, fields=fields, load=True)
    runs.sort(key=lambda r: (r["iteration"], r["member"]))
    if not runs:
        return None
    plt = _pyplot()
    iterations = sorted({r["iteration"] for r in runs})
    fig, axes = plt.subplots(1, len(iterations), figsize=(3.2 * len(iterations) + 1, 3.4), squeeze=False)
    for ax, iteration in zip(axes[0], iterations, strict=True):
        for r in (r for r in runs if r["iteration"] == iteration):
            curve = r["learning_curve"]
            key = "rmse_force" if any(p.get("rmse_force") is not None for p in curve) else "loss"
            points = [(p["step"], p[key]) for p in curve if p.get(key) is not None]
            if points:
                steps, y = zip(*points, strict=True)
                ax.plot(steps, y, lw=1.2, label=f"m{r['member']} {r['engine']} ({key})")
        ax.set(yscale="log", xlabel="step (DeePMD) / epoch (MACE)", title=f"iteration {iteration}")
        ax.legend(frameon=False, fontsize=7)
    axes[0][0].set_ylabel("trainer's force RMSE (eV/Å) or loss")
    return _save(
        fig,
        folder / "learning_curves.png",
        "Learning curves of every ensemble member per iteration, as the trainers report them (DeePMD's "
        "RMSE is of one training batch; the table's errors are on every label).",
    )


def parity_figures(store, campaign: str, folder: Path) -> list[Figure]:
    """Energy and force parity scatter of the ensemble mean and each member, per iteration.

    On the validation set when the campaign has one, else on its held-out labels.
    """
    plt = _pyplot()
    out = []
    for v in sorted(outputs(store, "validation", campaign, load=True), key=lambda v: v["iteration"]):
        label_set, p = (
            ("validation", v["parity"]) if v.get("parity") else ("held_out", v.get("held_out_parity"))
        )
        if not p:
            continue
        fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(9, 4.2))
        for name, e_pred, f_pred in zip(p["models"], p["energy_pred"], p["force_pred"], strict=True):
            style = {"s": 10, "zorder": 3, "color": "black"} if name == "mean" else {"s": 5, "alpha": 0.5}
            ax_e.scatter(p["energy_ref"], e_pred, label=name, **style)
            ax_f.scatter(p["force_ref"], f_pred, label=name, **{**style, "s": style["s"] / 3})
        for ax, unit in ((ax_e, "eV/atom"), (ax_f, "eV/Å")):
            lo, hi = min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, zorder=1)  # y = x over both axes' ranges
            ax.set(xlabel=f"DFT ({unit})", ylabel=f"model ({unit})")
        mean = next(
            m
            for m in v["metrics"]
            if (m.get("label_set", "validation"), m["model"], m["subset"]) == (label_set, "mean", "all")
        )
        ax_e.set_title(f"energy per atom: RMSE {mean['energy_rmse'] * 1000:.3g} meV/atom (mean)", fontsize=9)
        ax_f.set_title(f"force components: RMSE {mean['force_rmse']:.3g} eV/Å (mean)", fontsize=9)
        ax_e.legend(frameon=False, fontsize=7)
        what = "validation" if label_set == "validation" else "held-out (never trained on)"
        caption = (
            f"Iteration {v['iteration']}: parity of the {len(p['frame_ids'])} {what} frames, "
            "each member and the ensemble mean (black)."
        )
        out.append(_save(fig, folder / f"parity_it{v['iteration']}.png", caption))
    return out


def calibration_figure(store, campaign: str, folder: Path) -> Figure | None:
    """Committee deviation against the true force error of each held-out frame, per iteration."""
    scored = [v for v in outputs(store, "validation", campaign, load=True) if v.get("calibration")]
    if not scored:
        return None
    window = next(iter(outputs(store, "selection", campaign)), None)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for v in sorted(scored, key=lambda v: v["iteration"]):
        c = v["calibration"]
        ax.scatter(c["deviation"], c["error"], s=12, label=f"iteration {v['iteration']}")
    values = [x for v in scored for key in ("deviation", "error") for x in v["calibration"][key] if x > 0]
    lo, hi = min(values, default=1e-3) / 1.5, max(values, default=1.0) * 1.5
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, label="error = deviation")
    if window:
        ax.axvline(window["trust_lo"], color="tab:green", lw=1, ls="--", label="trust_lo")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(lo, hi),
        ylim=(lo, hi),
        xlabel="committee max force deviation (eV/Å)",
        ylabel="true max force error of the mean (eV/Å)",
    )
    ax.legend(frameon=False, fontsize=7)
    return _save(
        fig,
        folder / "calibration.png",
        "What the deviation means: each held-out frame's committee deviation against the true error of "
        "the ensemble mean's forces (max over atoms).  Frames left of trust_lo count as accurate; points "
        "above the grey line are worse than the committee says.",
    )


def property_figures(store, campaign: str, folder: Path) -> list[Figure]:
    """Production results: densities and diffusion coefficients with error bars, RDFs, populations."""
    runs = sorted(outputs(store, "properties", campaign, load=True), key=lambda p: p["run"])
    if not runs:
        return []
    plt = _pyplot()
    out = []
    dense = [p for p in runs if p["density"] is not None]
    diffusing = [(p["run"], d) for p in runs for d in p["diffusion"]]
    if dense or diffusing:
        fig, (ax_rho, ax_d) = plt.subplots(1, 2, figsize=(9, 3.8))
        names = [p["run"] for p in dense]
        ax_rho.errorbar(
            names, [p["density"] for p in dense], yerr=[p["density_ci"] for p in dense], fmt="o", capsize=4
        )
        ax_rho.set(ylabel="density (g/cm³), 95 % block interval", title="NPT density")
        for diffusive in (True, False):
            shown = [(run, d) for run, d in diffusing if d.get("diffusive", True) == diffusive]
            if shown:
                ax_d.errorbar(
                    [f"{run}\n{d['ion']}" for run, d in shown],
                    [d["d"] * 1e10 for _, d in shown],
                    yerr=[(d.get("d_ci") or 0.0) * 1e10 for _, d in shown],
                    fmt="s",
                    mfc=None if diffusive else "none",
                    capsize=4,
                    label=None if diffusive else "window not diffusive",
                )
        ax_d.set(ylabel="D (10⁻¹⁰ m²/s), 95 % block interval", title="self-diffusion (Einstein)")
        if any(not d.get("diffusive", True) for _, d in diffusing):
            ax_d.legend(frameon=False, fontsize=7)
        caption = (
            "Production densities and ion diffusion coefficients with 95 % intervals from independent time "
            "blocks (none drawn: the run is too short for two); hollow: the fit window is not diffusive."
        )
        out.append(_save(fig, folder / "properties.png", caption))
    curves = [(p["run"], r) for p in runs for r in p["rdfs"]]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4))
        for run, r in curves:
            ax.plot(r["r"], r["g"], lw=1.3, label=f"{run}: {'-'.join(r['pair'])}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xlabel="r (Å)", ylabel="g(r)")
        ax.legend(frameon=False, fontsize=8)
        out.append(_save(fig, folder / "rdf.png", "Radial distribution functions of the production runs."))
    shares = [
        (p["run"], key, p[key]) for p in runs for key in ("li_clusters", "tfsi_conformers", "pyr14_butyl")
    ]
    shares = [s for s in shares if s[2]]
    if shares:
        fig, axes = plt.subplots(1, len(shares), figsize=(3.2 * len(shares) + 0.5, 3.4), squeeze=False)
        for ax, (run, key, population) in zip(axes[0], shares, strict=True):
            ax.bar(list(population), list(population.values()))
            ax.set(title=f"{run}: {key.replace('_', ' ')}", ylabel="fraction", ylim=(0, 1))
        caption = "Populations: Li by TFSI in its first shell, TFSI conformer classes, PYR14 butyl tail."
        out.append(_save(fig, folder / "populations.png", caption))
    panels = [(p["run"], "TFSI", p["tfsi_angles"]) for p in runs if p["tfsi_angles"]]
    panels += [(p["run"], "PYR14", p["pyr14_distances"]) for p in runs if p["pyr14_distances"]]
    if panels:
        rows = (len(panels) + 1) // 2
        fig, axes = plt.subplots(rows, 2, figsize=(8, 3.6 * rows), squeeze=False)
        for ax, (run, ion, points) in zip(axes.flat, panels, strict=False):
            x, y = np.asarray(points).T
            ax.scatter(x, y, s=4)
            if ion == "TFSI":
                for edge in (-90, 90):
                    ax.axvline(edge, color="grey", lw=0.8)
                ax.plot([-180, 180], [-180, 180], color="grey", lw=0.8)  # psi = phi
                ax.axhline(0, color="grey", lw=0.8)
                ax.set(xlim=(-180, 180), ylim=(-180, 180), xlabel="phi, C-S-S-C (deg)", ylabel="psi, N (deg)")
            else:
                ax.axhline(6.0, color="grey", lw=0.8)
                ax.set(xlabel="r1, butyl end to ring C (Å)", ylabel="r2, methyl C to butyl end (Å)")
            ax.set_title(f"{run}: {ion}", fontsize=9)
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        caption = (
            "Dot distributions of the ion shapes (paper 1, Figures 7 and 9): TFSI classes are cut at "
            "|phi| = 90 deg and by psi between 0 and phi (lines); PYR14 anti above r2 = 6 Å."
        )
        out.append(_save(fig, folder / "shapes.png", caption))
    return out


def _save(fig, path: Path, caption: str) -> Figure:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return Figure(path.name, caption)


def write_report(store, campaign: str, folder: Path) -> Path:
    """Write ``folder/report.html`` and its PNGs for ``campaign``; return the page's path.

    Raises
    ------
    ValueError
        The store has no records of ``campaign``.
    """
    folder = Path(folder)
    rows = table_rows(iteration_table(store, campaign))
    if not rows and not outputs(store, "initial_set", campaign):
        raise ValueError(f"campaign: no records of '{campaign}' in the store; see ilflows status")
    folder.mkdir(parents=True, exist_ok=True)
    initial = next(iter(outputs(store, "initial_set", campaign, fields=["spec"])), {})
    summary = _summary(initial.get("spec") or {}, rows)
    selections = sorted(
        outputs(store, "selection", campaign, fields=["iteration", "notes"]), key=lambda s: s["iteration"]
    )
    notes = [f"iteration {s['iteration']}: {note}" for s in selections for note in s.get("notes") or []]
    figures = [
        f
        for f in (
            deviation_figure(store, campaign, folder),
            learning_curve_figure(store, campaign, folder),
            calibration_figure(store, campaign, folder),
        )
        if f is not None
    ]
    figures += parity_figures(store, campaign, folder) + property_figures(store, campaign, folder)
    page = folder / "report.html"
    page.write_text(_html(campaign, summary, rows, notes, figures, folder))
    return page


def _summary(spec: dict, rows: list[dict]) -> list[tuple[str, str]]:
    """Describe the campaign in a few lines: system, level of theory, committee, window, stages, outcome."""
    if not spec:
        return []
    systems = "; ".join(
        ", ".join(f"{n} {ion}" for ion, n in s["ions"].items()) + f" at {s['density']:g} g/cm3"
        for s in spec["system"]
    )
    dft = spec["dft"]
    theory = dft["engine"] + "".join(f" {dft[k]}" for k in ("functional", "dispersion") if dft.get(k))
    committee = ", ".join(f"{t['n_models']} x {t['engine']} ({t['preset']})" for t in spec["train"])
    select = spec["select"]
    window = f"{select['trust_lo']:g}-{select['trust_hi']:g} eV/Å"
    window += f", at most {select['max_candidates']} labels per iteration"
    explore = spec["explore"]
    stages = explore["stages"] or [{"name": "one stage", "max_iterations": spec["loop"]["max_iterations"]}]
    staged = "; ".join(
        f"{s.get('name') or f'stage {k}'}: {s.get('temperature') or explore['temperature']:g} K, "
        f"{s.get('n_steps') or explore['n_steps']} steps, up to {s['max_iterations']} iterations"
        for k, s in enumerate(stages)
    )
    lines = [
        ("system", systems),
        ("labels", theory),
        ("committee", committee),
        ("trust window", window),
        (
            "exploration",
            f"{explore['engine']} {explore['ensemble']}, {explore['n_walkers']} walkers; {staged}",
        ),
    ]
    if rows:
        last = rows[-1]
        outcome = f"iteration {last['iteration']}: accurate ratio {last['accurate_ratio']:.3g}"
        if last.get("heldout_rmse_f_eV_A") is not None:
            outcome += f", held-out force RMSE {last['heldout_rmse_f_eV_A']:.3g} eV/Å"
        outcome += f"; {last['stop_reason'] or 'running'}"
        lines.append(("latest", outcome))
    return lines


def _html(
    campaign: str,
    summary: list[tuple[str, str]],
    rows: list[dict],
    notes: list[str],
    figures: list[Figure],
    folder: Path,
) -> str:
    title = html.escape(f"ilflows campaign {campaign}")
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in summary)
    if rows:
        table = "<h3>Exploration</h3>" + _table([{c: r[c] for c in EXPLORED} for r in rows])
        table += "<h3>Errors (ensemble mean, every label of each set)</h3>"
        table += _table([{c: r[c] for c in ERRORS} for r in rows])
        if notes:
            table += "<h3>Notes</h3><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
    else:
        table = "<p>No iteration has finished yet.</p>"
    body = "\n".join(
        f'<figure><img src="data:image/png;base64,{_b64(folder / f.file)}" alt="{html.escape(f.file)}">'
        f'<figcaption>{html.escape(f.caption)} (<a href="{html.escape(f.file)}">{html.escape(f.file)}</a>)'
        "</figcaption></figure>"
        for f in figures
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 72em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border-bottom: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
th {{ max-width: 7em; }} td.words {{ text-align: left; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }} dt {{ font-weight: bold; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; }} figcaption {{ color: #444; font-size: 0.9em; }}
</style></head>
<body>
<h1>{title}</h1>
<dl>{facts}</dl>
<h2>Per iteration</h2>
{table}
<h2>Figures</h2>
{body or "<p>No figures yet.</p>"}
</body></html>
"""


def _cell(value) -> str:
    words = isinstance(value, str) and " " in value  # sentences read from the left
    return f"<td{' class=words' if words else ''}>{html.escape(format_value(value))}</td>"


def _table(rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(c).replace('_', '_<wbr>')}</th>" for c in rows[0])  # breaks at _
    body = "".join(f"<tr>{''.join(_cell(v) for v in r.values())}</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
