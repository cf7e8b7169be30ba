"""The base of every campaign-spec section, and of the sections each engine defines beside its code."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

NUMBERS = (int, float, int | None, float | None)  # field types a YAML yes/no must not fill


class Section(BaseModel):
    """A section of the campaign spec: unknown keys and non-finite numbers are refused."""

    # every number finite: a NaN temperature or an infinite rattle is a typo, never a request
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_yes_or_no(cls, data):
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and field.annotation in NUMBERS:
                    raise ValueError(f"{name}: {value} is a yes/no, not a number; give a number")
        return data

    # monty's MSONable protocol: Makers holding a section serialise it as data, not as its repr
    def as_dict(self) -> dict:
        """Serialise for jobflow/FireWorks."""
        return {"@module": type(self).__module__, "@class": type(self).__name__, **self.model_dump()}

    @classmethod
    def from_dict(cls, d: dict):
        """Rebuild from :meth:`as_dict`."""
        return cls.model_validate({k: v for k, v in d.items() if not k.startswith("@")})


class EngineSection(Section):
    """The section of one engine of a seam (DFT, training, exploration): its name and its settings.

    Each engine defines its own subclass beside its code, with ``engine`` fixed to its name; the
    seam's base class sets ``default_engine``, the engine a spec gets when it names none.
    """

    default_engine: ClassVar[str]
    engine: str

    @model_serializer(mode="wrap")
    def _engine_apart_from_the_default(self, handler, info):
        data = handler(self)
        # Leaving defaults out must still tell engines apart: the engine counts as set whenever
        # it is not the seam's default, though each engine's section has its own name as default.
        if info.exclude_defaults and self.engine != self.default_engine:
            data = {"engine": self.engine, **data}
        return data
