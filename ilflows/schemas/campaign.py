"""The campaign spec: one YAML file validated here before anything is queued."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BeforeValidator, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from ilflows.dft import ENGINES, DFTSpec
from ilflows.explore import EXPLORERS, ExploreSpec, StageSpec
from ilflows.registry import Registry, UnknownEngineError
from ilflows.schemas.control import (
    DispersionSpec,
    GuardSpec,
    LoopSpec,
    ProductionSpec,
    SelectSpec,
    TimeLimitsSpec,
    WorkersSpec,
)
from ilflows.schemas.inputs import InitialSpec, SystemSpec, ValidationSpec
from ilflows.schemas.section import Section
from ilflows.systems import check_system
from ilflows.systems.packing import elements, species
from ilflows.train import TRAINERS, TrainSpec

# The sections each engine defines beside its code, validated by the engine they name.
SEAMS: dict[str, Registry] = {"dft": ENGINES, "train": TRAINERS, "explore": EXPLORERS}


class CampaignSpec(Section):
    """A whole concurrent-learning campaign."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$",
        max_length=100,
        description="Campaign name (letters, digits, _ . -, not starting with a dot; at most 100): it names "
        "folders and files.",
    )
    system: list[SystemSpec] = Field(
        min_length=1,
        description="Compositions of the campaign (a mapping: one); every composition gets its own "
        "packed boxes, MD runs and walkers, and one committee learns them all (paper 1: 0-40 % LiTFSI).",
    )
    initial: InitialSpec = Field(default_factory=InitialSpec)
    dft: Annotated[SerializeAsAny[DFTSpec], BeforeValidator(ENGINES.section)] = Field(
        default_factory=ENGINES.section, description="The labelling engine and its settings."
    )
    train: list[Annotated[SerializeAsAny[TrainSpec], BeforeValidator(TRAINERS.section)]] = Field(
        default_factory=lambda: [TRAINERS.section()],
        min_length=1,
        description="Model families of the ensemble, each trained on the same labels (a mapping: one "
        "family); the committee of all their members explores and selects with one rule.",
    )
    explore: Annotated[SerializeAsAny[ExploreSpec], BeforeValidator(EXPLORERS.section)] = Field(
        default_factory=EXPLORERS.section, description="The explorer, its MD conditions and stages."
    )
    dispersion: DispersionSpec | None = Field(
        None, description="Hybrid MLP + D3 models; none: the models learn the labels as they are."
    )
    select: SelectSpec = Field(default_factory=SelectSpec)
    guards: GuardSpec = Field(default_factory=GuardSpec)
    loop: LoopSpec = Field(default_factory=LoopSpec)
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    time_limits: TimeLimitsSpec = Field(default_factory=TimeLimitsSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    production: list[ProductionSpec] = Field(
        default_factory=list, description="Production runs with the final models once the loop stops."
    )

    @property
    def n_models(self) -> int:
        """Members of the committee, all families together."""
        return sum(family.n_models for family in self.train)

    @field_validator("train", "system", mode="before")
    @classmethod
    def _one_entry(cls, value):
        return value if isinstance(value, list | tuple) else [value]

    @model_validator(mode="after")
    def _systems(self) -> CampaignSpec:
        # first: the checks below read each composition's ions and elements
        for k, system in enumerate(self.system):
            try:
                check_system(system)
            except ValueError as err:
                raise ValueError(
                    str(err) if len(self.system) == 1 else str(err).replace("system.", f"system.{k}.", 1)
                ) from None
        return self

    @model_validator(mode="after")
    def _committee(self) -> CampaignSpec:
        n_models = self.n_models
        if n_models < 2:
            raise ValueError(
                f"train: a committee needs at least 2 models in all, got {n_models}; raise train.n_models"
            )
        explorer = type(self.explore)
        if self.dispersion and not explorer.adds_dispersion:
            able = EXPLORERS.names_where(lambda section: section.adds_dispersion)
            raise ValueError(
                f"dispersion: D3 is added on top of the committee by the {' or '.join(able)} explorer; "
                f"set explore.engine: {able[0]}"
            )
        families = {family.engine for family in self.train}
        if explorer.drives is not None and not families <= explorer.drives:
            able = EXPLORERS.names_where(lambda section: section.drives is None or families <= section.drives)
            raise ValueError(
                f"explore.engine: {self.explore.engine} drives {', '.join(sorted(explorer.drives))} models "
                f"only, train has {', '.join(sorted(families))}; use explore.engine: {' or '.join(able)}"
            )
        return self

    def stages(self) -> list[StageSpec]:
        """Return ``explore.stages``, or one stage of the explore section's conditions."""
        return self.explore.stages or [StageSpec(max_iterations=self.loop.max_iterations)]

    @model_validator(mode="after")
    def _stages(self) -> CampaignSpec:
        for k, stage in enumerate(self.explore.stages):
            try:
                self.explore.at_stage(stage)
            except ValidationError as err:
                raise ValueError(
                    f"explore.stages.{k}: {err.errors()[0]['msg'].removeprefix('Value error, ')}"
                ) from None
            if stage.systems and max(stage.systems) >= len(self.system):
                raise ValueError(
                    f"explore.stages.{k}.systems: {max(stage.systems)}, but the campaign has "
                    f"{len(self.system)} compositions (from 0)"
                )
        for k, own in enumerate(self.select.systems):
            if own.system >= len(self.system):
                raise ValueError(
                    f"select.systems.{k}.system: {own.system}, but the campaign has {len(self.system)} "
                    "compositions (from 0)"
                )
        return self

    @model_validator(mode="after")
    def _validation_apart(self) -> CampaignSpec:
        init, val = self.initial, self.validation
        per_system = len(init.density_factors) * init.boxes_per_density * (1 + init.rattled_copies)
        per_system += self.explore.n_walkers + sum(run.n_boxes for run in init.md)
        used = range(init.seed, init.seed + len(self.system) * per_system)
        per_system = len(val.density_factors) * val.boxes_per_density + sum(run.n_boxes for run in val.md)
        n_validation = len(self.system) * per_system
        if n_validation and val.seed < used.stop and used.start < val.seed + n_validation:
            raise ValueError(
                f"validation.seed {val.seed} reuses seeds of the training boxes "
                f"({used.start}-{used.stop - 1}); pick a seed of {used.stop} or more"
            )
        return self

    @model_validator(mode="after")
    def _production(self) -> CampaignSpec:
        n_models = self.n_models
        observed = self.loop.observables.runs if self.loop.observables else []
        entries = [(f"production.{k}", run) for k, run in enumerate(self.production)]
        entries += [(f"loop.observables.runs.{k}", run) for k, run in enumerate(observed)]
        for field, run in entries:
            if run.system >= len(self.system):
                raise ValueError(
                    f"{field}.system: {run.system}, but the campaign has {len(self.system)} (from 0)"
                )
            if run.model >= n_models:
                raise ValueError(
                    f"{field}.model: {run.model} but the committee has {n_models} members (from 0)"
                )
            if run.molecule is not None and run.molecule not in self.system[run.system].ions:
                ions = ", ".join(self.system[run.system].ions)
                raise ValueError(
                    f"{field}.molecule: {run.molecule!r} is not an ion of the composition ({ions})"
                )
            if run.molecule is not None and run.ensemble == "npt":
                raise ValueError(f"{field}.ensemble: a single ion in vacuum runs in nvt")
            known = set(elements(self.system[run.system]))
            atoms = [] if run.molecule else species(self.system[run.system])
            for pair in run.rdf_pairs:
                if not set(pair) <= known:
                    raise ValueError(
                        f"{field}.rdf_pairs: {list(pair)} names elements not in the composition "
                        f"({', '.join(sorted(known))})"
                    )
                if pair[0] == pair[1] and atoms.count(pair[0]) < 2:
                    raise ValueError(
                        f"{field}.rdf_pairs: {list(pair)} needs two {pair[0]} atoms, the box has "
                        f"{atoms.count(pair[0])}; add ion pairs or drop the pair"
                    )
        return self

    @model_validator(mode="after")
    def _aimd_engine(self) -> CampaignSpec:
        for stage in ("initial", "validation"):
            for k, run in enumerate(getattr(self, stage).md):
                if run.potential == "dft" and not type(self.dft).runs_md:
                    able = ENGINES.names_where(lambda section: section.runs_md)
                    raise ValueError(
                        f"{stage}.md.{k}.potential: 'dft' runs AIMD with dft.engine, and {self.dft.engine} "
                        f"runs no MD; use potential: xtb (frames relabelled by {self.dft.engine}) or "
                        f"dft.engine: {' or '.join(able)}"
                    )
        return self


LOCAL_KEY = "local"
# pydantic errors whose own message names no fix; the others say what the value should be
FIXES = {
    "extra_forbidden": "not a field of this section; remove it or correct its spelling",
    "missing": "required; add it",
}


class SpecError(ValueError):
    """A campaign spec that cannot be run; the message is one line naming the field."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} is given twice (line {key_node.start_mark.line + 1}); keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _not_a_setting(seam: Registry, raw: dict, loc: tuple) -> str | None:
    """Say which engines have the setting at ``loc`` that the engine named in ``raw`` has not (None: none)."""
    if able := seam.names_where(lambda section: loc[-1] in section.model_fields):
        section = raw[loc[0]][loc[1]] if isinstance(raw[loc[0]], list) else raw[loc[0]]
        engine = section.get("engine", seam.default)
        return f"not a setting of {seam.kind} {engine}; it is a setting of {' and '.join(able)}"
    return None


def load_spec(path: str | Path, local: bool = False) -> CampaignSpec:
    """Read and validate a campaign spec, raising :class:`SpecError` with a one-line message.

    A spec may carry a ``local:`` mapping: the same campaign scaled down for one machine.  With
    ``local=True`` (``ilflows run --local``) each section named there replaces the spec's
    section of that name, and ``-local`` is appended to the campaign name; otherwise it is
    ignored.
    """
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file; give the campaign's YAML spec") from None
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"{path}: cannot read YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a campaign spec is a YAML mapping with at least 'name' and 'system'")
    overlay = raw.pop(LOCAL_KEY, None)
    if local:
        if not isinstance(overlay, dict):
            raise SpecError(
                f"{path}: {LOCAL_KEY}: --local needs a '{LOCAL_KEY}:' mapping of sections in the spec"
            )
        raw = {**raw, **overlay, "name": f"{raw.get('name')}-local"}
    for entry in (raw.get("initial") or {}).get("imports") or []:
        if isinstance(entry, dict) and "path" in entry:  # relative to the spec, absolute for workers
            entry["path"] = str((path.parent / str(entry["path"])).resolve())
    explore = raw.get("explore")
    if isinstance(explore, dict) and isinstance(explore.get("starts"), list):
        explore["starts"] = [str((path.parent / str(start)).resolve()) for start in explore["starts"]]
    try:
        spec = CampaignSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = list(first["loc"])
        if loc[1:2] == [0] and isinstance(raw.get(loc[0]), dict):
            del loc[1]  # one entry given as a mapping (train, system): name its field as written
        # a check across sections (no location) names its fields in its message
        where = ".".join(str(p) for p in loc)
        message = FIXES.get(first["type"], first["msg"].removeprefix("Value error, "))
        if isinstance(first.get("ctx", {}).get("error"), UnknownEngineError):
            where += ".engine"
        elif (
            first["type"] == "extra_forbidden"
            and loc[0] in SEAMS
            and len(first["loc"]) == 2 + (loc[0] == "train")
        ):
            message = _not_a_setting(SEAMS[loc[0]], raw, first["loc"]) or message
        raise SpecError(f"{path}: {where}: {message}" if where else f"{path}: {message}") from err
    return spec
