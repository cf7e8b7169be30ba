"""DFT labels each selection strategy needs to reach a held-out force RMSE, against DP-GEN's pick.

Pool-based active learning on the demo's system (one PYR14+ BF4- pair in a 12 Å box, CP2K
GFN1-xTB labels), so that every strategy sees the same candidate frames and no label is
computed twice:

1. **Data** (made once, kept in ``--workdir``): xTB NVT MD from Packmol boxes, every frame
   labelled by the run itself.  The pool is ``POOL_RUNS`` (300-600 K, frames every 5 steps);
   the test set is ``TEST_RUNS``, boxes packed apart (every 10 steps), never selected.
2. **Loop**, per seed: ``--initial`` pool frames drawn at random are labelled; the demo's committee
   (MACE ``small``, its ``n_models`` members, seeds differ) trains on them as in the demo (60 epochs
   from scratch, then each member fine-tuned for 20 epochs from its own previous model).  Each
   iteration the committee's max force deviation on every unlabelled pool frame puts it in the
   window [``--trust-lo``, ``--trust-hi``) or not, and a strategy picks at most ``--per-iteration``
   candidates (:func:`ilflows.select.iteration.pick`, the campaign's own code):
   ``spread`` (ilflows' default: evenly spaced deviation ranks), ``farthest`` (farthest-point
   sampling of structure descriptors) or ``random`` (DP-GEN: uniform among the candidates up to
   ``fp_task_max``).  Their labels are added, the committee retrains, and the ensemble mean is
   scored on the test set (force components, eV/Å).  A strategy stops when no pool frame is a
   candidate or after ``--iterations``.  Iteration 0 is shared by all strategies of a seed.
3. **Figures**: per seed and strategy the learning curve (labels, candidates, pool accurate
   ratio, test force RMSE); then the labels each strategy needs to reach ``--target`` (default:
   the best RMSE of the least accurate run, so that every run reaches it),
   interpolated between iterations in log RMSE, and its ratio to ``random``.
   Target: ilflows' default needs at most 0.7x the labels of the DP-GEN pick.

A pool stands in for exploration: the candidates are the same for every strategy, so the
comparison measures the choice among candidates, which is what the strategies differ in.

Run: ``.venv/bin/python benchmarks/learning_efficiency.py [--seeds 3] [--jobs 2]``
(about 40 minutes on two cores, six of them making the data).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from ilflows.analysis.validation import deviations, error_metrics, parity, predict  # noqa: E402
from ilflows.dft import get_engine  # noqa: E402
from ilflows.loop.jobs import type_map_of  # noqa: E402
from ilflows.loop.steps import finetuning  # noqa: E402
from ilflows.schemas import DFTLabel, FrameOrigin, ModelFile  # noqa: E402
from ilflows.schemas.campaign import load_spec  # noqa: E402
from ilflows.select.iteration import pick  # noqa: E402
from ilflows.systems import elements  # noqa: E402
from ilflows.systems.packing import pack_box  # noqa: E402
from ilflows.train import get_trainer  # noqa: E402

SPEC = ROOT / "workflows" / "demo.yaml"
# (temperature K, Packmol seed) of each xTB MD run: 200 steps of 0.5 fs
POOL_RUNS = [(300, 11), (300, 12), (450, 13), (450, 14), (600, 15), (600, 16)]
TEST_RUNS = [(300, 21), (450, 22), (600, 23)]
N_STEPS, TIMESTEP = 200, 0.5  # fs
POOL_EVERY, TEST_EVERY = 5, 10
STRATEGIES = ("spread", "farthest", "random")


def xtb_md(spec, temperature: float, seed: int, every: int, folder: Path) -> list[DFTLabel]:
    """Pack one box and run xTB NVT MD from it; return its frames as labels."""
    system = spec.system[0]
    box = pack_box(system, system.density, seed, folder / "packmol")
    run = get_engine("cp2k-xtb").run_md(
        box,
        spec.dft,
        folder / "md",
        n_steps=N_STEPS,
        temperature=temperature,
        timestep=TIMESTEP,
        every=every,
        seed=seed,
    )
    labels = []
    for k, (step, frame, result) in enumerate(run.snapshots):
        if not result.converged:
            continue
        origin = FrameOrigin(
            campaign="bench",
            stage="initial",
            method="md",
            equilibrated=True,
            index=k,
            source=f"md{seed}",
            md_step=step,
            temperature=temperature,
            timestep=TIMESTEP,
            seed=seed,
        )
        labels.append(
            DFTLabel(
                **result.model_dump(),
                campaign="bench",
                iteration=-1,
                frame_id=origin.frame_id,
                frame=frame,
                origin=origin,
            )
        )
    return labels


def dataset(spec, runs: list[tuple[int, int]], every: int, path: Path, jobs: int) -> list[DFTLabel]:
    """Labels of ``runs``, read from ``path`` or made (in parallel) and saved there."""
    if path.exists():
        return [DFTLabel.model_validate_json(line) for line in path.read_text().splitlines()]
    folder = path.parent / path.stem
    with ThreadPoolExecutor(jobs) as pool:
        made = pool.map(
            lambda run: xtb_md(spec, run[0], run[1], every, folder / f"T{run[0]}-s{run[1]}"), runs
        )
        labels = [label for run in made for label in run]
    path.write_text("".join(label.model_dump_json() + "\n" for label in labels))
    return labels


@dataclass
class Run:
    """One strategy's active-learning run for one seed."""

    strategy: str
    seed: int
    chosen: list[int]  # pool indices labelled so far
    models: list[ModelFile] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)
    done: bool = False


def train_committees(spec, committees: list[tuple], executor: ThreadPoolExecutor) -> list[list[ModelFile]]:
    """Train every member of several committees at once; return their models, committee by committee.

    ``committees``: (labels, parent models or None, folder) each; a committee has the demo's
    ``n_models`` members, member ``k`` has seed ``k``
    and is fine-tuned from parent ``k`` when given, as the campaign's members are.
    """
    family, type_map = spec.train[0], type_map_of(spec)
    trainer, size = get_trainer(family.engine), family.n_models

    def member(task: tuple) -> ModelFile:
        (labels, parents, folder), k = task
        params = trainer.hyperparameters(family, type_map, seed=k)
        if parents:
            params = finetuning(params, family, parents[k])
        return trainer.train(labels, type_map, params, folder / f"m{k}").model_file

    models = list(executor.map(member, [(c, k) for c in committees for k in range(size)]))
    return [models[i : i + size] for i in range(0, len(models), size)]


def model_paths(models: list[ModelFile], folder: Path) -> list[Path]:
    """Write the committee's model files into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [m.write(folder / f"m{k}.model") for k, m in enumerate(models)]


def test_rmse(paths: list[Path], test: list[DFTLabel]) -> float:
    """Force RMSE of the ensemble mean on the test labels, eV/Å."""
    energies, forces = predict(paths, test)
    metrics = error_metrics(parity(test, list(range(len(paths))), energies, forces), "held_out")
    return next(m.force_rmse for m in metrics if m.model == "mean" and m.subset == "all")


def step(
    run: Run, it: int, args, pool: list[DFTLabel], test: list[DFTLabel], el: list[str], folder: Path
) -> list:
    """Score ``run``'s committee, record the point, and return the pool indices it picks next."""
    paths = model_paths(run.models, folder / "models")
    rest = np.array([i for i in range(len(pool)) if i not in set(run.chosen)])
    d = deviations(predict(paths, [pool[i] for i in rest])[1])
    candidate = (d >= args.trust_lo) & (d < args.trust_hi)
    point = {
        "iteration": it,
        "labels": len(run.chosen),
        "candidates": int(candidate.sum()),
        "accurate": float(np.mean(d < args.trust_lo)),
        "rmse": test_rmse(paths, test),
    }
    run.curve.append(point)
    if not candidate.any() or it == args.iterations:
        run.done = True
        return []
    picks = pick(
        run.strategy,
        d,
        candidate,
        args.per_iteration,
        frame=lambda i: pool[rest[i]].frame,
        labelled=[pool[i].frame for i in run.chosen],
        elements=el,
        seed=[run.seed, it],
    )
    return [int(rest[i]) for i in picks]


def learn(seed: int, args, spec, pool: list[DFTLabel], test: list[DFTLabel], workdir: Path) -> list[Run]:
    """Run every strategy from the same initial labels and committee; return their runs."""
    el = elements(spec.system[0])
    start = sorted(np.random.default_rng(seed).choice(len(pool), args.initial, replace=False).tolist())
    with ThreadPoolExecutor(args.jobs) as executor:
        [first] = train_committees(
            spec, [([pool[i] for i in start], None, workdir / f"seed{seed}/it0")], executor
        )
        runs = [Run(s, seed, list(start), list(first)) for s in args.strategies]
        for it in range(args.iterations + 1):
            active = [r for r in runs if not r.done]
            if not active:
                break
            for run in active:
                run.chosen += step(
                    run, it, args, pool, test, el, workdir / f"seed{seed}/{run.strategy}/it{it}"
                )
            growing = [r for r in active if not r.done]
            trained = train_committees(
                spec,
                [
                    ([pool[i] for i in r.chosen], r.models, workdir / f"seed{seed}/{r.strategy}/it{it + 1}")
                    for r in growing
                ],
                executor,
            )
            for run, models in zip(growing, trained, strict=True):
                run.models = models
            print(
                f"  seed {seed} iteration {it}: "
                + ", ".join(
                    f"{r.strategy} {r.curve[-1]['labels']} labels {r.curve[-1]['rmse']:.3f} eV/Å"
                    for r in active
                ),
                flush=True,
            )
    return runs


def labels_to_reach(curve: list[dict], target: float) -> float:
    """Labels at which the test RMSE first reaches ``target`` (log-linear between points; inf: never)."""
    for a, b in zip(curve, curve[1:], strict=False):
        if b["rmse"] <= target < a["rmse"]:
            frac = (math.log(a["rmse"]) - math.log(target)) / (math.log(a["rmse"]) - math.log(b["rmse"]))
            return a["labels"] + frac * (b["labels"] - a["labels"])
    return curve[0]["labels"] if curve and curve[0]["rmse"] <= target else math.inf


def summary(results: dict[int, list[Run]], target: float | None) -> None:
    """Print the learning curves and the labels each strategy needs to reach the target."""
    strategies = [r.strategy for r in next(iter(results.values()))]
    for seed, runs in results.items():
        print(f"\nseed {seed}: labels / candidates / pool accurate ratio / test force RMSE (eV/Å)")
        for run in runs:
            cells = [
                f"{p['labels']}/{p['candidates']}/{p['accurate']:.2f}/{p['rmse']:.3f}" for p in run.curve
            ]
            print(f"  {run.strategy:9s} " + "  ".join(cells))
    best = {
        s: np.mean(
            [min(p["rmse"] for p in r.curve) for runs in results.values() for r in runs if r.strategy == s]
        )
        for s in strategies
    }
    if target is None:  # the least accurate run's best: every run reaches it
        target = max(min(p["rmse"] for p in r.curve) for runs in results.values() for r in runs)
    print(f"\ntarget: test force RMSE {target:.3f} eV/Å (ensemble mean)")
    needed = {}
    for s in strategies:
        per_seed = [
            labels_to_reach(r.curve, target) for runs in results.values() for r in runs if r.strategy == s
        ]
        needed[s] = float(np.mean(per_seed))
        cells = ", ".join("not reached" if math.isinf(n) else f"{n:.1f}" for n in per_seed)
        print(
            f"  {s:9s} best RMSE {best[s]:.3f} eV/Å (mean over seeds); labels to target per seed: {cells}; "
            f"mean {needed[s]:.1f}"
        )
    if "random" in needed:
        for s in strategies:
            if s != "random":
                print(f"  ratio {s} / random (DP-GEN): {needed[s] / needed['random']:.2f}x (target <= 0.7x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "learning_efficiency")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed0", type=int, default=0, help="first seed; seeds are seed0, seed0+1, ...")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="engines run at once")
    parser.add_argument("--initial", type=int, default=8, help="labels drawn at random to start")
    parser.add_argument("--per-iteration", type=int, default=8, help="fp_task_max: labels per iteration")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--trust-lo", type=float, default=0.15, help="eV/Å, the demo's")
    parser.add_argument("--trust-hi", type=float, default=1.5, help="eV/Å")
    parser.add_argument("--target", type=float, default=None, help="test force RMSE to reach, eV/Å")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument(
        "--summary", action="store_true", help="print the figures of the last run's results.json, run nothing"
    )
    args = parser.parse_args()
    if args.summary:
        saved = json.loads((args.workdir / "results.json").read_text())
        summary(
            {
                int(seed): [Run(s, int(seed), [], curve=curve) for s, curve in runs.items()]
                for seed, runs in saved.items()
            },
            args.target,
        )
        return
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    spec = load_spec(SPEC)
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pool = dataset(spec, POOL_RUNS, POOL_EVERY, args.workdir / "pool.jsonl", args.jobs)
    test = dataset(spec, TEST_RUNS, TEST_EVERY, args.workdir / "test.jsonl", args.jobs)
    print(
        f"data: {len(pool)} pool and {len(test)} test frames of {pool[0].frame.n_atoms} atoms, xTB MD at "
        f"{sorted({t for t, _ in POOL_RUNS})} K ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    results = {}
    for seed in range(args.seed0, args.seed0 + args.seeds):
        results[seed] = learn(seed, args, spec, pool, test, args.workdir / "runs")
    summary(results, args.target)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s with {args.jobs} engines at once")
    (args.workdir / "results.json").write_text(
        json.dumps({seed: {r.strategy: r.curve for r in runs} for seed, runs in results.items()}, indent=1)
    )


if __name__ == "__main__":
    main()
