"""The plugin manager: built-ins and third-party packages, all through the ``privbench`` entry points.

The host owns the ``register`` callback handed to each hook (as datasette and llm do), so it can
validate every item, refuse a duplicate name while naming both packages, and record which package
and version supplied it. Tests build fresh managers with ``load_registry(entry_points=False,
extra_plugins=[...])`` instead of touching a global one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

import pluggy

from privbench import hookspecs
from privbench.errors import PluginError, PrivbenchError, accepted

KINDS = ("dataset", "defense", "attack")
HOOKS = {"dataset": "register_datasets", "defense": "register_defenses", "attack": "register_attacks"}
FORBIDDEN_IN_NAMES = re.compile(r"[\s:,=]")


@dataclass(frozen=True)
class Registered:
    """One registered dataset, defense or attack and where it came from."""

    kind: str
    name: str
    cls: type
    package: str
    version: str

    @property
    def summary(self) -> str:
        return self.cls.summary


class Registry:
    """Name lookup over everything the plugins registered, with clear errors."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Registered]] = {kind: {} for kind in KINDS}

    def add(self, item: Registered) -> None:
        existing = self.items[item.kind].get(item.name)
        if existing is not None:
            raise PluginError(
                f"{item.kind} '{item.name}' is registered twice: by {existing.package} "
                f"{existing.version} and by {item.package} {item.version}".replace("  ", " "))
        self.items[item.kind][item.name] = item

    def get(self, kind: str, name: str) -> Registered:
        try:
            return self.items[kind][name]
        except KeyError:
            raise PrivbenchError(
                f"unknown {kind} '{name}'; accepted: {accepted(self.items[kind])}") from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.items[kind])

    def all(self, kind: str) -> list[Registered]:
        return [self.items[kind][name] for name in self.names(kind)]


def make_plugin_manager(entry_points: bool = True, extra_plugins=()) -> pluggy.PluginManager:
    """A fresh plugin manager with the entry-point plugins and ``extra_plugins`` registered."""
    manager = pluggy.PluginManager("privbench")
    manager.add_hookspecs(hookspecs)
    if entry_points:
        manager.load_setuptools_entrypoints("privbench")
    for plugin in extra_plugins:
        manager.register(plugin, name=_plugin_name(plugin))
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginError(f"plugin {error.plugin!r} has a hook implementation that matches no "
                          f"privbench hook ({error}); hooks: {accepted(HOOKS.values())}") from None
    return manager


def _plugin_name(plugin) -> str:
    """A readable name for a plugin registered without a distribution (module or class name)."""
    named = plugin if isinstance(plugin, type) or hasattr(plugin, "__file__") else type(plugin)
    return getattr(named, "__name__", repr(plugin))


def _sources(manager: pluggy.PluginManager) -> dict[int, tuple[str, str]]:
    """Map each plugin object (by id) to the (package, version) that installed it."""
    return {id(plugin): (dist.metadata["name"], dist.version)
            for plugin, dist in manager.list_plugin_distinfo()}


def load_registry(entry_points: bool = True, extra_plugins=()) -> Registry:
    """Ask every plugin to register its datasets, defenses and attacks."""
    manager = make_plugin_manager(entry_points, extra_plugins)
    sources = _sources(manager)
    registry = Registry()
    for kind, hook_name in HOOKS.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            package, version = sources.get(id(impl.plugin), (impl.plugin_name, ""))
            impl.function(register=partial(_register, registry, kind, package, version))
    return registry


def _register(registry: Registry, kind: str, package: str, version: str, cls: type) -> None:
    """The ``register`` callback: validate one plugin class and add it to the registry."""
    _check_plugin_class(kind, package, cls)
    registry.add(Registered(kind, cls.name, cls, package, version))


def _check_plugin_class(kind: str, package: str, cls: type) -> None:
    from privbench.core import ACCESS, THREAT_MODELS, Attack, Defense
    from privbench.datasets import DatasetSource
    base = {"dataset": DatasetSource, "defense": Defense, "attack": Attack}[kind]
    where = f"{package} registered {cls!r} as a {kind}"
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{where}, but it is not a subclass of {base.__module__}.{base.__name__}")
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name or FORBIDDEN_IN_NAMES.search(name):
        raise PluginError(f"{where} with the name {name!r}; a name is a non-empty string without "
                          "spaces, ':', ',' or '=' (convention: lowercase-hyphenated)")
    if not getattr(cls, "summary", ""):
        raise PluginError(f"{where} without a one-line summary")
    if kind == "attack":
        if cls.threat_model not in THREAT_MODELS:
            raise PluginError(f"{where} with threat model {cls.threat_model!r}; "
                              f"accepted: {accepted(THREAT_MODELS)}")
        unknown = set(cls.requires) - set(ACCESS)
        if unknown:
            raise PluginError(f"{where} requiring unknown access {sorted(unknown)}; "
                              f"accepted: {accepted(ACCESS)}")
