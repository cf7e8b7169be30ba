"""Choose an engine by name: each seam keeps a registry of ``name -> "module:Class"``.

An engine class carries its spec section as ``section`` (an :class:`EngineSection` defined in the
same module), so a new engine is one module plus one registry line, and the campaign spec
validates ``dft:``, ``train:`` and ``explore:`` through the registry (tests register fake
engines the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

from ilflows.settings import SettingsError, get_settings

if TYPE_CHECKING:
    from ilflows.schemas.section import EngineSection


@cache
def load_plugins() -> None:
    """Import the modules of the ``plugins`` setting once, so that their engines are registered.

    Raises
    ------
    SettingsError
        When one cannot be imported.

    """
    for name in get_settings().plugin_modules:
        try:
            import_module(name)
        except ImportError as err:
            raise SettingsError(
                f"setting plugins: cannot import {name!r} ({err}); fix ILFLOWS_PLUGINS"
            ) from None


class UnknownEngineError(ValueError):
    """A section names an engine no registry line has."""


class Registry:
    """The engines of one seam, each imported only when first asked for.

    Parameters
    ----------
    kind
        What the engines are, for messages ("DFT engine", "trainer", "explorer").
    default
        The engine a section gets when it names none.
    table
        ``name -> "module:Class"`` of every engine.

    """

    def __init__(self, kind: str, default: str, table: dict[str, str]):
        self.kind, self.default, self.table = kind, default, dict(table)

    def names(self) -> list[str]:
        """Return the registered names, sorted (plugins' included)."""
        load_plugins()
        return sorted(self.table)

    def register(self, name: str, target: str) -> None:
        """Add (or replace) the engine ``name``, its class given as ``"module:Class"``."""
        self.table[name] = target

    def engine_class(self, name: str) -> type:
        """Import and return the class registered under ``name``.

        Raises
        ------
        UnknownEngineError
            When no engine has that name; the message says which kind and lists the known ones.

        """
        load_plugins()
        if not isinstance(name, str) or name not in self.table:
            raise UnknownEngineError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        module, cls = self.table[name].split(":")
        return getattr(import_module(module), cls)

    def get(self, name: str):
        """Return an instance of the engine called ``name`` (see :meth:`engine_class`)."""
        return self.engine_class(name)()

    def section(self, value: dict | EngineSection | None = None) -> EngineSection:
        """Validate a spec section with the section class of the engine it names (default: ``default``)."""
        if value is not None and not isinstance(value, dict):
            return value  # a section already, or a wrong type that pydantic names
        data = dict(value or {})
        return self.engine_class(data.setdefault("engine", self.default)).section.model_validate(data)

    def names_where(self, test: Callable[[type[EngineSection]], bool]) -> list[str]:
        """Return the names of the engines whose section class passes ``test`` (imports them all)."""
        return [name for name in self.names() if test(self.engine_class(name).section)]
