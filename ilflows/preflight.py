"""Checks before anything is queued: the engines' executables, imported data, walker start files."""

from __future__ import annotations

from ilflows.schemas.campaign import CampaignSpec
from ilflows.settings import get_settings


def preflight(spec: CampaignSpec) -> list[str]:
    """Refuse a campaign that cannot run here, before anything is queued; return notes to show.

    Checks the executables of its engines, reads every imported data set (its elements must
    be the campaign's) and every walker start file (its molecules must be a composition's).
    The notes are the import reports: oddities a chemist should see.  A spec whose initial
    labels (packed boxes and imports; with initial MD, not checked) would all be held out of
    training is refused.

    Raises
    ------
    EngineError
        An executable is missing.
    SpecError
        An import cannot be read or holds elements the campaign's models do not have, or a
        start file is not a box of one of the compositions, or every initial label would be
        held out.
    """
    from ilflows.dft import get_engine
    from ilflows.execute import require_executable
    from ilflows.explore import get_explorer
    from ilflows.external import read_import
    from ilflows.loop import type_map_of
    from ilflows.schemas import FrameOrigin
    from ilflows.schemas.campaign import SpecError
    from ilflows.select.labels import is_held_out
    from ilflows.systems.packing import n_initial_frames
    from ilflows.train import get_trainer

    needs = [(get_settings().packmol_cmd, "packmol_cmd")]
    trainers = [get_trainer(family.engine) for family in spec.train]
    for engine in (get_engine(spec.dft.engine), *trainers, get_explorer(spec.explore.engine)):
        needs += engine.executables()
    for command, setting in needs:
        require_executable(command, setting)
    notes, elements = [], set(type_map_of(spec))
    trainable = [  # iteration 0's labels, held-out split aside
        FrameOrigin(campaign=spec.name, stage="initial", method="packmol", index=i).frame_id
        for i in range(n_initial_frames(spec))
    ]
    for k, entry in enumerate(spec.initial.imports):
        field = f"initial.imports.{k}"
        try:
            imported = read_import(entry, spec.name, f"import{k}")
        except OSError as err:
            raise SpecError(
                f"{field}.path: cannot read {entry.path} ({err.strerror}); give a path relative to the "
                "spec's folder, on a file system the workers share"
            ) from err
        except ValueError as err:
            raise SpecError(f"{field}: {str(err).splitlines()[0]}") from err
        foreign = sorted(set(imported.report.species) - elements)
        if foreign:
            raise SpecError(
                f"{field}: elements {', '.join(foreign)} are not in the campaign's system "
                f"({', '.join(sorted(elements))}); import data of the same liquid"
            )
        notes.append(f"{field} ({entry.path.name}):\n{imported.report.summary()}")
        if entry.stage == "initial":
            trainable += [label.frame_id for label in imported.labels]
    fraction = spec.validation.holdout_fraction
    if not spec.initial.md and all(is_held_out(frame_id, fraction) for frame_id in trainable):
        raise SpecError(
            f"validation.holdout_fraction: all {len(trainable)} initial labels fall in the held-out "
            f"{fraction:g} (chosen by frame id), so the first committee would have none to train on; "
            "lower validation.holdout_fraction or add initial boxes"
        )
    if spec.explore.starts:
        from ilflows.systems.starts import read_start

        for k, path in enumerate(spec.explore.starts):
            try:
                read_start(path, spec)
            except ValueError as err:
                raise SpecError(f"explore.starts.{k}: {err}") from err
    return notes
