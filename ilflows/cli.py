"""``ilflows`` command line: run, submit, status, query.

Here the parser, the queue commands (run, submit, worker, status, ...) and main; the commands
that read results or move data (query, report, export, import-dpgen) are in
:mod:`ilflows.cli_results`.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time

from ilflows.cli_results import cmd_export, cmd_import_dpgen, cmd_query, cmd_report, known_campaign
from ilflows.settings import get_settings


def _spec(args):
    """Load the spec and run the preflight checks, printing what they found."""
    from ilflows.preflight import preflight
    from ilflows.schemas.campaign import SpecError, load_spec
    from ilflows.schemas.cost import check_cost

    spec = load_spec(args.spec, local=args.local)
    if not args.force:
        try:
            check_cost(spec, get_settings().cost_limits)
        except SpecError as err:
            raise SpecError(f"{args.spec}: {err}") from None
    for note in preflight(spec):
        print(note, flush=True)
    return spec


def _print_iterations(store, campaign: str) -> None:
    from ilflows.store.queries import ERRORS, EXPLORED, format_table, iteration_table, outputs, table_rows

    rows = table_rows(iteration_table(store, campaign))
    print(f"\ncampaign {campaign}: per-iteration results, exploration")
    print(format_table([{c: r[c] for c in EXPLORED} for r in rows]))
    print(f"\ncampaign {campaign}: errors of the ensemble mean on every label of each set")
    print(format_table([{c: r[c] for c in ERRORS} for r in rows]))
    selections = sorted(
        outputs(store, "selection", campaign, fields=["iteration", "notes"]), key=lambda s: s["iteration"]
    )
    for s in selections:
        for note in s.get("notes") or []:
            print(f"note (iteration {s['iteration']}): {note}")


def _progress_printer():
    t0 = time.perf_counter()

    def show(p) -> None:
        clock = time.perf_counter() - t0
        print(
            f"[{clock:7.1f} s] {p.done:3d}/{p.total:<3d} jobs done  "
            f"{p.job:<28s} {p.state} ({p.seconds:.1f} s)",
            flush=True,
        )

    return show


def _print_recovered(result) -> None:
    if result.stored:
        print(
            f"note: the campaign was not in the queue, but the store held {result.stored} of its results: "
            "it was queued again from the spec, and jobs whose result was stored returned it unrun"
        )
    if result.recovered:
        names = ", ".join(result.recovered)
        print(f"put back {len(result.recovered)} jobs a killed worker left running: {names}")
    if result.disk_failures:
        names = ", ".join(result.disk_failures)
        print(f"put back {len(result.disk_failures)} jobs a full disk had failed: {names}")
    if result.stopped_by:
        names = ", ".join(result.interrupted) or "none"
        print(
            f"stopped by {result.stopped_by}: {len(result.interrupted)} interrupted jobs are back in the "
            f"queue, ready ({names}); run the same command again to go on",
            flush=True,
        )


def cmd_run(args) -> int:
    """Queue the campaign on the embedded store and run it here to the end."""
    from ilflows.farm import run_worker
    from ilflows.store import connect_jobstore

    spec = _spec(args)
    settings = get_settings()
    t0 = time.perf_counter()
    print(f"campaign {spec.name}: store {settings.backend} at {settings.home}", flush=True)
    printer = None if args.quiet else _progress_printer()
    r = run_worker(spec, settings, on_progress=printer, workers=args.workers, timeout=args.timeout)
    _print_recovered(r)
    print(
        f"\n{'queued and ran' if r.queued else 'resumed'} {spec.name}: "
        f"{r.completed}/{r.total} jobs completed, {r.fizzled} fizzled, {time.perf_counter() - t0:.1f} s wall"
    )
    _print_iterations(connect_jobstore(settings), spec.name)
    return 0 if r.fizzled == 0 else 1


def cmd_submit(args) -> int:
    """Queue the campaign on the configured LaunchPad for cluster workers."""
    from ilflows.queue_admin import submit

    spec = _spec(args)
    added = submit(spec)
    where = get_settings().backend
    print(f"campaign {spec.name}: {'queued' if added else 'already in the queue'} ({where})")
    return 0


def cmd_worker(args) -> int:
    """Run queued jobs of any campaign until none is ready (a cluster node's rocket launcher)."""
    from ilflows.farm import run_worker

    printer = None if args.quiet else _progress_printer()
    r = run_worker(
        None, get_settings(), printer, category=args.category, workers=args.workers, timeout=args.timeout
    )
    _print_recovered(r)
    print(f"queue: {r.completed}/{r.total} jobs completed, {r.fizzled} fizzled ({args.workers} workers)")
    return 0 if r.fizzled == 0 else 1


def cmd_qlaunch(args) -> int:
    """Keep batch jobs running ``ilflows worker`` in the batch queue while the queue has work."""
    from ilflows.farm import queue_launch

    n = queue_launch(args.qadapter, get_settings(), args.category, args.max_queued, args.poll)
    print(f"queue: nothing left to run; {n} batch jobs submitted")
    return 0


def cmd_check(args) -> int:
    """Validate a spec, the executables and the imports it needs, queueing nothing."""
    spec = _spec(args)
    print(f"{args.spec}: ok (campaign {spec.name})")
    return 0


def _labels_stored_or_queued(iterations: list[dict]) -> int:
    """DFT labels of a campaign up to its latest selection: trained on, failed, and sent on to DFT."""
    if not iterations:
        return 0
    last = iterations[-1]
    sent_on = last["selected"] if last["stop_reason"] is None else 0  # a stopped loop labels none
    return last["trained_on"] + last["held_out"] + last["failed_labels"] + sent_on


def cmd_status(args) -> int:
    """Per-iteration table and queue state of each campaign."""
    from ilflows.queue_admin import archive_file, campaign_progress, queue_health
    from ilflows.store import connect_jobstore, embedded_limit_notes, get_launchpad, require_store
    from ilflows.store.queries import campaigns, iteration_table, table_rows

    require_store()
    store = connect_jobstore()
    lp = get_launchpad()
    settings = get_settings()
    queued = [n for n in lp.workflows.distinct("metadata.campaign") if n]
    known = sorted(set(campaigns(store)) | set(queued))
    if args.campaign:
        known_campaign(args.campaign, known + [p.stem for p in (settings.home / "archive").glob("*.json")])
    names = [args.campaign] if args.campaign else known
    report = {}
    for name in names:
        done, fizzled, total = campaign_progress(lp, name)
        health = queue_health(lp, name)
        archived = archive_file(name, settings)
        report[name] = {
            "archived": str(archived) if total == 0 and archived.exists() else None,
            "jobs": {"completed": done, "fizzled": fizzled, "total": total, "blocked": health.blocked},
            "fizzled": [{"job": job, "error": error} for job, error in health.fizzled],
            "lost": health.lost,
            "iterations": table_rows(iteration_table(store, name)),
        }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    labels = sum(_labels_stored_or_queued(r["iterations"]) for r in report.values())
    for note in embedded_limit_notes(lp.fireworks.count_documents({}), labels, settings):
        print(f"note: {note} (README: Where the embedded store ends)\n")
    if not names:
        print("no campaigns in the store")
    for name, r in report.items():
        j = r["jobs"]
        if r["archived"]:
            print(f"campaign {name}: finished, its jobs archived to {r['archived']}")
        else:
            print(f"campaign {name}: {j['completed']}/{j['total']} jobs completed, {j['fizzled']} fizzled")
        for failed in r["fizzled"]:
            print(f"  fizzled  {failed['job']}: {failed['error']}")
        for job in r["lost"]:
            print(f"  lost     {job}: its worker stopped")
        if r["fizzled"] or r["lost"]:
            print(f"  {j['blocked']} jobs wait on them; `ilflows rerun {name}` puts them back in the queue")
        _print_iterations(store, name)
    return 0


def cmd_rerun(args) -> int:
    """Put a campaign's fizzled and lost jobs back in the queue."""
    from ilflows.queue_admin import rerun

    names = rerun(args.campaign)
    print(
        f"campaign {args.campaign}: {len(names)} jobs back in the queue" + "".join(f"\n  {n}" for n in names)
    )
    if names:
        print("run them with `ilflows run SPEC` (embedded) or workers (`ilflows worker`)")
    return 0


def cmd_archive(args) -> int:
    """Move a finished campaign's jobs out of the live queue (its results stay in the store)."""
    from ilflows.queue_admin import archive

    path = archive(args.campaign)
    print(f"campaign {args.campaign}: jobs moved out of the queue to {path}; results stay in the store")
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return int(text)


def parser() -> argparse.ArgumentParser:
    """Build the argument parser."""
    p = argparse.ArgumentParser(prog="ilflows", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, func, text in [
        ("run", cmd_run, "queue SPEC on the embedded store and run it here, showing progress"),
        (
            "submit",
            cmd_submit,
            "queue SPEC on the configured LaunchPad for ilflows worker/qlaunch",
        ),
        ("check", cmd_check, "validate SPEC and its executables without queueing"),
    ]:
        s = sub.add_parser(name, help=text)
        s.add_argument("spec", help="campaign YAML, e.g. workflows/demo.yaml")
        s.add_argument(
            "--local", action="store_true", help="use the spec's 'local:' sections: the campaign scaled down"
        )
        s.add_argument(
            "--force",
            action="store_true",
            help="queue a campaign that asks for more than the max_* settings allow (atoms, labels, "
            "MD steps, trainings)",
        )
        s.set_defaults(func=func)
    s = sub.add_parser("worker", help="run ready jobs of the configured queue until none is left")
    s.add_argument(
        "--category", help="run only jobs of this category (the spec's workers: section), e.g. cpu or gpu"
    )
    s.set_defaults(func=cmd_worker)
    for name in ("run", "worker"):
        s = sub.choices[name]
        s.add_argument("--quiet", action="store_true", help="no per-job progress lines")
        s.add_argument(
            "--workers", type=_positive_int, default=1, help="jobs run at once on this machine (default 1)"
        )
        s.add_argument(
            "--timeout",
            type=float,
            help="seconds after which no new job starts, e.g. the batch job's walltime less its longest job",
        )
    s = sub.add_parser("qlaunch", help="submit batch jobs (SLURM, PBS) running workers while jobs are ready")
    s.add_argument("qadapter", help="queue adapter file, e.g. launchpad_configs/my_qadapter_slurm.yaml")
    s.add_argument("--category", help="only count jobs of this category as work (as the workers' --category)")
    s.add_argument(
        "--max-queued", type=_positive_int, default=1, help="batch jobs queued or running at once (default 1)"
    )
    s.add_argument("--poll", type=float, default=30.0, help="seconds between looks at the queue (default 30)")
    s.set_defaults(func=cmd_qlaunch)
    s = sub.add_parser("status", help="per-iteration table of each campaign")
    s.add_argument("campaign", nargs="?", help="campaign name (default: all)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("rerun", help="put a campaign's fizzled and lost jobs back in the queue")
    s.add_argument("campaign", help="campaign name")
    s.set_defaults(func=cmd_rerun)
    s = sub.add_parser("report", help="write a campaign's HTML report with its figures (PNG)")
    s.add_argument("campaign", help="campaign name")
    s.add_argument("--out", help="folder of the page and its PNGs (default: HOME/reports/CAMPAIGN)")
    s.set_defaults(func=cmd_report)
    s = sub.add_parser("archive", help="move a finished campaign's jobs out of the live queue")
    s.add_argument("campaign", help="campaign name")
    s.set_defaults(func=cmd_archive)
    s = sub.add_parser(
        "export", help="a campaign's labels as DeePMD systems (dpdata) or extxyz, and its models"
    )
    s.add_argument("campaign", help="campaign name")
    s.add_argument("--out", required=True, help="folder to write to")
    s.add_argument(
        "--format", choices=["deepmd-npy", "extxyz"], default="deepmd-npy", help="default deepmd-npy"
    )
    s.add_argument(
        "--stress-unit",
        choices=["GPa", "kbar"],
        default="GPa",
        help="extxyz: unit of the pressure-sign stress_<unit> beside ASE's stress (kbar: VASP's, atomate2's)",
    )
    s.add_argument("--iteration", type=int, help="labels asked for up to this iteration; models of it")
    s.add_argument("--models", action="store_true", help="also the frozen models and their training records")
    s.set_defaults(func=cmd_export)
    s = sub.add_parser(
        "import-dpgen", help="an ilflows spec from a DP-GEN param.json (what is dropped is said)"
    )
    s.add_argument("param", help="DP-GEN param.json")
    s.add_argument("--machine", help="DP-GEN machine.json (only noted: resources are ilflows settings)")
    s.add_argument("--out", required=True, help="the spec YAML to write")
    s.add_argument("--name", help="campaign name (default: the folder of param.json)")
    s.set_defaults(func=cmd_import_dpgen)
    s = sub.add_parser("query", help="records of the store (tables, JSON or CSV)")
    s.add_argument(
        "what", choices=["labels", "trainings", "explorations", "validation", "properties", "frames"]
    )
    s.add_argument("--campaign", help="campaign name (default: all)")
    s.add_argument("--iteration", type=int, help="only this iteration (-1: initial set)")
    s.add_argument("--min", type=float, default=0.05, help="frames: lowest deviation, eV/Å (default 0.05)")
    s.add_argument("--max", type=float, default=1.5, help="frames: deviation below this, eV/Å (default 1.5)")
    export = s.add_mutually_exclusive_group()
    export.add_argument("--json", action="store_true", help="machine-readable output")
    export.add_argument("--csv", action="store_true", help="comma-separated rows for a spreadsheet")
    s.set_defaults(func=cmd_query)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ilflows`` console script."""
    from pymongo.errors import PyMongoError  # a dependency of fireworks, jobflow and maggma

    from ilflows.execute import EngineError
    from ilflows.queue_admin import CampaignError
    from ilflows.registry import load_plugins
    from ilflows.schemas.campaign import SpecError
    from ilflows.settings import SettingsError
    from ilflows.store import (
        StoreBusyError,
        StoreConfigError,
        disk_full,
        disk_full_message,
        mongo_failure,
        prepare_fireworks,
    )

    args = parser().parse_args(argv)
    try:
        load_plugins()  # engines registered outside ilflows, before any spec names them
        prepare_fireworks()
        return args.func(args)
    except (SettingsError, SpecError, StoreBusyError, StoreConfigError, EngineError, CampaignError) as err:
        print(f"ilflows: error: {err}", file=sys.stderr)
        return 2
    except PyMongoError as err:  # any command's store read or write: the server, not ilflows, failed
        if get_settings().backend != "mongodb":
            raise
        print(f"ilflows: error: {mongo_failure(err, None, None, None, None)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before or after the workers ran: nothing was left half done
        print("ilflows: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (ilflows query labels | head): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        return 0
    except (OSError, sqlite3.OperationalError) as err:  # a full disk (a closed pipe is caught above)
        if not disk_full(err):
            raise
        print(f"ilflows: error: {disk_full_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
