"""ilflows and DP-GEN 0.14.0 side by side on the same tiny campaign, printed as measured figures.

The problem is the peer set-up in ``../shared/peer-dpgen``: one PYR14+ BF4- pair in a 12 Å box,
its 20 CP2K GFN1-xTB frames as the initial set, 4 se_e2_a models of 400 steps, two 500-step NVT
LAMMPS walkers at 450 K, trust window 0.05/1.5 eV/Å, at most 10 labels per iteration, three
trainings and two explorations.  ilflows gets the same training input (its ``tiny`` preset is the
peer's), MD and starting structures, CP2K input (``stress: false``), window and cap, with 2
workers for DP-GEN's 2 concurrent dpdispatcher jobs, and its run folders on scratch (setting
``scratch``, as on a cluster node).  One difference remains: ilflows explores once more after
the last training (its loop ends on a selection; the figures below match steps and leave that
one out).

Both runs go through the same timing wrappers around ``dp``, ``lmp`` and ``cp2k``, one after the
other on this machine.  For each step and iteration the script prints the wall time (from the
step's start to the next step's start), the time inside the executables (union of their runs),
the time outside them, and labels; for each run, the files and bytes written (the run folders
sampled every 0.5 s: every path ever seen, at its largest), on the shared folder and on scratch,
and what is left at the end.

Targets: ilflows' time outside the executables at most 10 % of DP-GEN's; wall time per iteration
at most 0.75x DP-GEN's; at most a tenth of DP-GEN's files; an unconverged frame counted as a
failed label, never a crash (DP-GEN needs ``bin/dpgen_patched`` for that).

Set-up (once, about 5 min): ``python3.11 -m venv .bench/dpgen-venv`` then, in it,
``pip install torch==2.13.0`` and ``pip install "deepmd-kit[cpu,lmp]==3.2.0" dpdata dpgen``.
Run (about 12 min): ``.venv/bin/python benchmarks/dpgen_side_by_side.py [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Step:
    """One step of one iteration: its window and what ran inside it."""

    iteration: int
    kind: str  # train, explore, label
    start: float  # epoch s
    end: float = 0.0
    labels: int | None = None
    failed_labels: int | None = None

    @property
    def wall(self) -> float:
        return self.end - self.start


@dataclass
class Run:
    """A whole campaign by one tool."""

    name: str
    wall: float
    steps: list[Step]
    exe: list[tuple[str, float, float]]  # (executable, start, end) in epoch s
    files_seen: dict[str, int] = field(default_factory=dict)
    files_left: dict[str, int] = field(default_factory=dict)

    def inside(self, start: float, end: float) -> float:
        """Seconds of [start, end] during which at least one executable ran."""
        spans = sorted((max(s, start), min(e, end)) for _, s, e in self.exe if e > start and s < end)
        busy, reach = 0.0, start
        for s, e in spans:
            busy += max(0.0, e - max(s, reach))
            reach = max(reach, e)
        return busy


class FileSampler(threading.Thread):
    """Every file under ``root`` seen while running, at its largest size (bytes)."""

    def __init__(self, root: Path, period: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.period = root, period
        self.before = set(self.walk())
        self.seen: dict[str, int] = {}
        self.stop = threading.Event()

    def walk(self) -> dict[str, int]:
        sizes = {}
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for name in files:
                path = os.path.join(folder, name)
                try:
                    sizes[path] = os.path.getsize(path)
                except OSError:  # removed between listing and stat
                    pass
        return sizes

    def sample(self) -> None:
        for path, size in self.walk().items():
            if path not in self.before:
                self.seen[path] = max(size, self.seen.get(path, 0))

    def run(self) -> None:
        while not self.stop.wait(self.period):
            self.sample()

    def finish(self) -> tuple[dict[str, int], dict[str, int]]:
        self.stop.set()
        self.join()
        self.sample()
        left = {p: s for p, s in self.walk().items() if p not in self.before}
        return self.seen, left


def timing_wrappers(folder: Path, log: Path, commands: dict[str, str]) -> dict[str, Path]:
    """Shell wrappers that run each command and append 'name start end rc' to ``log``."""
    folder.mkdir(parents=True, exist_ok=True)
    wrappers = {}
    for name, command in commands.items():
        path = folder / f"timed-{name}"
        path.write_text(
            "#!/bin/bash\n"
            "s=$(date +%s.%N)\n"
            f'{command} "$@"\n'
            "rc=$?\n"
            f'echo "{name} $s $(date +%s.%N) $rc" >> {log}\n'
            "exit $rc\n"
        )
        path.chmod(0o755)
        wrappers[name] = path
    return wrappers


def read_exe_log(log: Path) -> list[tuple[str, float, float]]:
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        parts = line.split()
        name = parts[0].removeprefix("t")  # the peer's wrappers are tdp, tlmp, tcp2k
        rows.append((name, float(parts[1]), float(parts[2])))
    return rows


def timed(command: list[str], workdir: Path, env: dict) -> None:
    """Run ``command`` in ``workdir``; save its wall time and the files it wrote to ``run.json``."""
    sampler = FileSampler(workdir)
    sampler.start()
    start = time.time()
    log = workdir / "stdout.log"
    with open(log, "w") as out:
        proc = subprocess.run(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    end = time.time()
    seen, left = sampler.finish()
    if proc.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").splitlines()[-5:])
        sys.exit(f"{command[0]} exited {proc.returncode}: {tail}")
    record = {"start": start, "end": end, "files_seen": seen, "files_left": left}
    (workdir / "run.json").write_text(json.dumps(record))


def read_run(name: str, workdir: Path, steps: list[Step], exe_log: Path) -> Run:
    record = json.loads((workdir / "run.json").read_text())
    return Run(
        name,
        record["end"] - record["start"],
        steps,
        read_exe_log(exe_log),
        record["files_seen"],
        record["files_left"],
    )


# ---------------------------------------------------------------------------------------- DP-GEN

DPGEN_TASK = re.compile(r"^(\S+ \S+) - INFO : -+iter\.(\d+) task (\d+)-+")
DPGEN_KIND = {0: "train", 3: "explore", 6: "label"}  # task 00 make_train, 03 make_model_devi, 06 make_fp


def run_dpgen(peer: Path, venv: Path, workdir: Path) -> None:
    """Copy the peer set-up into ``workdir``, point it there, and run it."""
    shutil.copytree(peer, workdir, ignore=shutil.ignore_patterns("exe_times.log", "venv", "remote*"))
    for path in [workdir / "param.json", workdir / "machine.json", *sorted((workdir / "bin").iterdir())]:
        path.chmod(0o755 if path.parent.name == "bin" else 0o644)
        path.write_text(path.read_text().replace("PEER_DIR", str(workdir)))
    (workdir / "venv").symlink_to(venv.resolve())
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    timed([str(venv / "bin/python"), "bin/dpgen_patched", "run", "param.json", "machine.json"], workdir, env)


def read_dpgen(workdir: Path) -> Run:
    """Steps from dpgen.log (task 00, 03, 06 open train, model_devi, fp), labels from iter.*/02.fp."""
    steps: list[Step] = []
    for line in (workdir / "dpgen.log").read_text().splitlines():
        match = DPGEN_TASK.match(line)
        if not match:
            continue
        stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        iteration, task = int(match[2]), int(match[3])
        if task in DPGEN_KIND:
            if steps:
                steps[-1].end = stamp
            steps.append(Step(iteration, DPGEN_KIND[task], stamp))
    if steps[-1].kind == "explore":  # make_model_devi found no more model_devi_jobs: the run is over
        steps.pop()
    run = read_run("DP-GEN", workdir, steps, workdir / "exe_times.log")
    steps[-1].end = steps[-1].end or json.loads((workdir / "run.json").read_text())["end"]
    for step in steps:
        if step.kind == "label":
            tasks = sorted((workdir / f"iter.{step.iteration:06d}/02.fp").glob("task.*"))
            outputs = [t / "output" for t in tasks]
            converged = [p.exists() and "SCF run converged" in p.read_text(errors="replace") for p in outputs]
            step.labels, step.failed_labels = len(tasks), converged.count(False)
    return run


# ---------------------------------------------------------------------------------------- ilflows

SPEC = """\
name: side-by-side
system:
  ions: {{PYR14: 1, BF4: 1}}
  density: 0.22        # g/cm3: the peer's 12 Å box
initial:
  boxes_per_density: 0
  imports:
    - path: {init_data}
      format: deepmd-npy
      level_of_theory: CP2K GFN1-xTB
      source: ../shared/peer-dpgen/init_data/ip35 (the peer's 20 initial frames)
dft:
  engine: cp2k-xtb
  stress: false        # the peer's CP2K input computes no stress
train:
  engine: deepmd
  preset: tiny         # the peer's training input
  n_models: 4
explore:
  engine: lammps-deepmd
  ensemble: nvt
  temperature: 450
  n_steps: 500
  timestep: 0.5
  frame_every: 25
  starts: [{confs}/ip35.POSCAR, {confs}/ip35_b.POSCAR]   # the peer's two walkers
select:
  trust_lo: 0.05
  trust_hi: 1.5
  max_candidates: 10
guards:
  enabled: false       # DP-GEN has none: both label the same frames of the window
loop:
  max_iterations: 3    # three trainings, as the peer's two model_devi_jobs give
  accurate_ratio: 1.0  # DP-GEN runs every model_devi_job; so does this
"""

SCRATCH = "scratch"  # stands for a node-local disk; its files are counted apart
JOB_KIND = re.compile(r"^(train|explore|select|label) it(\d+)")


def run_ilflows(peer: Path, workdir: Path) -> None:
    """Write the same campaign for ilflows and run it with 2 workers."""
    workdir.mkdir(parents=True)
    venv_bin = str(ROOT / ".venv/bin")
    commands = {
        "dp": shutil.which("dp", path=venv_bin),
        "lmp": shutil.which("lmp", path=venv_bin),
        "cp2k": shutil.which("cp2k.psmp"),
    }
    wrappers = timing_wrappers(workdir / "bin", workdir / "exe_times.log", commands)
    spec = workdir / "campaign.yaml"
    spec.write_text(SPEC.format(init_data=peer / "init_data/ip35", confs=peer / "confs"))
    env = dict(
        os.environ,
        ILFLOWS_HOME=str(workdir / "home"),
        ILFLOWS_DP_CMD=str(wrappers["dp"]),
        ILFLOWS_LMP_CMD=str(wrappers["lmp"]),
        ILFLOWS_CP2K_CMD=str(wrappers["cp2k"]),
        ILFLOWS_SCRATCH=str(workdir / SCRATCH),
    )
    timed([str(ROOT / ".venv/bin/ilflows"), "run", str(spec), "--workers", "2"], workdir, env)


def read_ilflows(workdir: Path) -> Run:
    """Steps from the queue's launch times (select counts with the labels, as DP-GEN's fp step)."""
    home = workdir / "home"
    os.environ["ILFLOWS_HOME"] = str(home)  # read this run's queue and store
    from ilflows.settings import get_settings
    from ilflows.store import get_jobstore, get_launchpad
    from ilflows.store.queries import labels

    get_settings.cache_clear()
    lp = get_launchpad()
    spans: dict[tuple[int, str], list[float]] = {}
    for fw in lp.fireworks.find({}, {"name": 1, "launches": 1}):
        match = JOB_KIND.match(fw["name"])
        if not match or not fw["launches"]:
            continue
        launch = lp.launches.find_one({"launch_id": fw["launches"][-1]}, {"time_start": 1, "time_end": 1})
        kind = "label" if match[1] in ("select", "label") else match[1]  # DP-GEN's fp step selects too
        times = spans.setdefault((int(match[2]), kind), [])
        times += [_epoch(launch["time_start"]), _epoch(launch["time_end"])]
    order = {"train": 0, "explore": 1, "label": 2}
    steps = [
        Step(it, kind, min(t))
        for (it, kind), t in sorted(spans.items(), key=lambda kv: (kv[0][0], order[kv[0][1]]))
    ]
    for step, nxt in zip(steps, steps[1:], strict=False):
        step.end = nxt.start
    steps[-1].end = max(spans[(steps[-1].iteration, steps[-1].kind)])
    store = get_jobstore()
    store.connect()
    done = labels(store, "side-by-side")
    for step in steps:
        if step.kind == "label":
            mine = [r for r in done if r["iteration"] == step.iteration and r["method"] == "md"]
            step.labels, step.failed_labels = len(mine), sum(not r["converged"] for r in mine)
    return read_run("ilflows", workdir, steps, workdir / "exe_times.log")


def _epoch(stamp) -> float:
    """FireWorks writes naive UTC datetimes."""
    if isinstance(stamp, str):
        stamp = datetime.fromisoformat(stamp)
    return stamp.replace(tzinfo=UTC).timestamp()


# ---------------------------------------------------------------------------------------- report


def matched(run: Run) -> list[Step]:
    """The steps both tools run: trainings 0-2, explorations and labels 0-1."""
    last_train = max(s.iteration for s in run.steps if s.kind == "train")
    return [s for s in run.steps if s.kind == "train" or s.iteration < last_train]


def step_table(runs: list[Run]) -> None:
    print(
        f"{'step':14s}"
        + "".join(f"{r.name + ' wall / inside / outside, s':>40s}" for r in runs)
        + "   labels (failed)"
    )
    keys = [(s.iteration, s.kind) for s in matched(runs[0])]
    for key in keys:
        cells, labels = [], []
        for run in runs:
            step = next((s for s in run.steps if (s.iteration, s.kind) == key), None)
            if step is None:
                cells.append(f"{'-':>40s}")
                continue
            inside = run.inside(step.start, step.end)
            cells.append(f"{step.wall:22.1f} / {inside:5.1f} / {step.wall - inside:6.1f}")
            if step.labels is not None:
                labels.append(f"{run.name} {step.labels} ({step.failed_labels})")
        print(f"it{key[0]} {key[1]:10s}" + "".join(cells) + "   " + ", ".join(labels))


def iteration_figures(run: Run) -> list[tuple[int, float, float]]:
    """(iteration, wall, outside) per full iteration (train, explore, label) and the last training."""
    figures = []
    for it in sorted({s.iteration for s in matched(run)}):
        steps = [s for s in matched(run) if s.iteration == it]
        start, end = min(s.start for s in steps), max(s.end for s in steps)
        figures.append((it, end - start, end - start - run.inside(start, end)))
    return figures


def report(dpgen: Run, ours: Run) -> None:
    runs = [dpgen, ours]
    print("\nper step (wall from the step's start to the next step's start; inside = dp/lmp/cp2k running)")
    step_table(runs)
    columns = f"{'DP-GEN wall / outside, s':>30s}{'ilflows wall / outside, s':>30s}{'ratio':>8s}"
    print(f"\n{'per iteration':14s}{columns}")
    pairs = list(zip(iteration_figures(dpgen), iteration_figures(ours), strict=True))
    for (it, wall_d, out_d), (_, wall_o, out_o) in pairs:
        print(f"it{it:<12d}{wall_d:21.1f} / {out_d:6.1f}{wall_o:21.1f} / {out_o:6.1f}{wall_o / wall_d:8.2f}")
    full = pairs[:-1]  # the last is a training alone
    wall_ratio = sum(o[1] for _, o in full) / sum(d[1] for d, _ in full)
    total = [sum(s.wall for s in matched(r)) for r in runs]
    outside = [sum(s.wall - r.inside(s.start, s.end) for s in matched(r)) for r in runs]
    inside = [t - o for t, o in zip(total, outside, strict=True)]
    print(f"\n{'matched steps':36s}{'DP-GEN':>10s}{'ilflows':>10s}{'ratio':>8s}")
    rows = [("wall, s", *total), ("inside dp/lmp/cp2k, s", *inside), ("outside them, s", *outside)]
    rows.append(("whole run (process), s", dpgen.wall, ours.wall))
    for attr in ("files_seen", "files_left"):
        what = "written" if attr == "files_seen" else "left at the end"
        d, o = getattr(dpgen, attr), getattr(ours, attr)
        shared = {p: size for p, size in o.items() if f"/{SCRATCH}/" not in p}
        rows += [(f"files {what}, shared folder", len(d), len(shared))]
        rows += [(f"MB {what}, shared folder", sum(d.values()) / 1e6, sum(shared.values()) / 1e6)]
        if attr == "files_seen":
            rows += [(f"files {what}, with scratch", len(d), len(o))]
            rows += [(f"MB {what}, with scratch", sum(d.values()) / 1e6, sum(o.values()) / 1e6)]
    for label, d, o in rows:
        print(f"{label:36s}{d:10.1f}{o:10.1f}{o / d if d else float('nan'):8.3f}")
    print("(ilflows' whole run includes one more exploration after its last training)")
    for run in runs:
        labels = [
            f"it{s.iteration} {s.labels} ({s.failed_labels} failed)" for s in run.steps if s.kind == "label"
        ]
        print(f"labels, {run.name}: {', '.join(labels)}")
    print("\ntargets")
    print(f"  time outside the executables <= 0.10x DP-GEN's: {outside[1] / outside[0]:.3f}")
    print(f"  wall time per full iteration <= 0.75x DP-GEN's: {wall_ratio:.2f}")
    shared = [p for p in ours.files_seen if f"/{SCRATCH}/" not in p]
    print(f"  files written on the shared folder <= 0.1x DP-GEN's: {len(shared) / len(dpgen.files_seen):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", type=Path, default=ROOT.parent / "shared/peer-dpgen")
    parser.add_argument("--dpgen-venv", type=Path, default=ROOT / ".bench/dpgen-venv")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    parser.add_argument("--report", type=Path, help="only print the figures of a folder kept by --keep")
    args = parser.parse_args()
    if args.report:
        dpgen, ours = read_dpgen(args.report / "dpgen"), read_ilflows(args.report / "ilflows")
        report(dpgen, ours)
        return
    if not (args.dpgen_venv / "bin/dpgen").exists():
        sys.exit(f"--dpgen-venv: no dpgen in {args.dpgen_venv}; create it as the module docstring says")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="ilflows-vs-dpgen-"))
    print(f"runs in {workdir}")
    run_dpgen(args.peer.resolve(), args.dpgen_venv, workdir / "dpgen")
    run_ilflows(args.peer.resolve(), workdir / "ilflows")
    report(read_dpgen(workdir / "dpgen"), read_ilflows(workdir / "ilflows"))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
