"""``ilflows`` commands that read results or move data in and out: query, report, export, import-dpgen."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ilflows.settings import get_settings


def known_campaign(name: str, known: list[str]) -> None:
    """Raise a one-line :class:`~ilflows.queue_admin.CampaignError` unless ``name`` is ``known``."""
    from ilflows.queue_admin import CampaignError

    if name not in known:
        listed = ", ".join(known) or "none yet"
        raise CampaignError(
            f"campaign: no campaign named '{name}' in the store or the queue (known: {listed})"
        )


def cmd_report(args) -> int:
    """Write a campaign's HTML report and its PNG figures."""
    from pathlib import Path

    from ilflows.analysis.report import write_report
    from ilflows.store import connect_jobstore, require_store

    require_store()
    folder = Path(args.out) if args.out else get_settings().home / "reports" / args.campaign
    try:
        page = write_report(connect_jobstore(), args.campaign, folder)
    except ValueError as err:
        print(f"ilflows: error: {err}", file=sys.stderr)
        return 2
    print(f"campaign {args.campaign}: report written to {page}")
    return 0


def cmd_query(args) -> int:
    """Labels, trainings, explorations, validation errors or frames by deviation range."""
    from ilflows.store import connect_jobstore, require_store
    from ilflows.store import queries as q

    require_store()
    store = connect_jobstore()
    if args.campaign:
        known_campaign(args.campaign, q.campaigns(store))
    if args.what == "labels":
        rows = q.labels(store, args.campaign, args.iteration)
    elif args.what == "trainings":
        rows = q.trainings(store, args.campaign)
    elif args.what == "explorations":
        rows = q.explorations(store, args.campaign)
    elif args.what == "validation":
        rows = q.validations(store, args.campaign)
    elif args.what == "properties":
        rows = q.properties(store, args.campaign)
    else:
        rows = q.frames_by_deviation(store, args.campaign, args.min, args.max)
    if args.iteration is not None and args.what != "labels":
        rows = [r for r in rows if r["iteration"] == args.iteration]
    if args.csv:
        # rows may differ in columns; with none, the query's own columns make the header
        columns = list(dict.fromkeys(key for row in rows for key in row)) or q.COLUMNS[args.what]
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(json.dumps(rows, indent=1) if args.json else q.format_table(rows))
    return 0


def cmd_export(args) -> int:
    """Write a campaign's labels as DeePMD systems or extxyz, and its models."""
    from pathlib import Path

    from ilflows import export
    from ilflows.store import connect_jobstore, require_store
    from ilflows.store.queries import campaigns, outputs

    require_store()
    store = connect_jobstore()
    known_campaign(args.campaign, campaigns(store))
    out = Path(args.out)
    labels = export.campaign_labels(store, args.campaign, args.iteration)
    if args.format == "extxyz":
        written = [export.write_extxyz(labels, out / f"{args.campaign}.extxyz", args.stress_unit)]
    else:
        type_map = outputs(store, "initial_set", args.campaign, fields=["type_map"])[0]["type_map"]
        written = export.write_deepmd(labels, type_map, out)
    print(f"campaign {args.campaign}: {len(labels)} labels written to {', '.join(map(str, written))}")
    if args.models:
        models = export.write_models(store, args.campaign, args.iteration, out / "models")
        print(f"{len(models)} models with their training records in {out / 'models'}")
    return 0


def cmd_import_dpgen(args) -> int:
    """Write an ilflows campaign spec from a DP-GEN param.json, printing what was not mapped."""
    import yaml

    from ilflows.dpgen_import import spec_from_dpgen
    from ilflows.schemas.campaign import SpecError

    source = Path(args.param)
    try:
        param = json.loads(source.read_text())
    except (OSError, ValueError) as err:
        raise SpecError(f"{source}: cannot read DP-GEN parameters ({err})") from None
    try:
        spec, notes = spec_from_dpgen(
            param, source.resolve().parent, args.name or source.resolve().parent.name
        )
    except ValueError as err:
        raise SpecError(f"{source}: {err}") from None
    if args.machine:
        notes.append(f"{args.machine}: resources are ilflows' settings and qadapter templates; not read")
    out = Path(args.out)
    out.write_text(
        f"# from DP-GEN {source.resolve()} by ilflows import-dpgen\n" + yaml.safe_dump(spec, sort_keys=False)
    )
    print(f"wrote {out}")
    for note in notes:
        print(f"  note: {note}")
    return 0
