"""The plugin manager: built-ins and third-party packages, all through the ``privbench`` entry points.

The host owns the ``register`` callback handed to each hook (as datasette and llm do), so it can
validate every item, refuse a duplicate name while naming both packages, and record which package
and version supplied it. Tests build fresh managers with ``load_registry(entry_points=False,
extra_plugins=[...])`` instead of touching a global one.

Entry points are loaded by our own loop, not pluggy's ``load_setuptools_entrypoints``: that one
registers each module under its bare entry-point name and silently skips a second package's entry
point of the same name. Here each module is registered as ``"<distribution>:<entry point>"``, so
both load, and a duplicate *item* name is reported naming both packages.

A broken plugin never blocks the others: a module that fails to import, implements no hook, has a
misspelt hook, or registers a bad class is skipped (in whole or that one class) and described in
``Registry.problems``, which ``privbench list`` prints.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import partial

import pluggy

from privbench import hookspecs
from privbench.errors import PluginError, PrivbenchError, accepted

GROUP = "privbench"
KINDS = ("dataset", "defense", "attack")
HOOKS = {"dataset": "register_datasets", "defense": "register_defenses", "attack": "register_attacks",
         "metric": "register_metrics"}
FORBIDDEN_IN_NAMES = re.compile(r"[\s:,=]")
OWN_DISTRIBUTION = "privbench"


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
    """Name lookup over everything the plugins registered, with clear errors.

    ``problems`` holds one line per thing that went wrong while loading the plugins (the broken
    plugin or class was skipped); ``broken`` the labels of the plugins those lines are about.
    """

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Registered]] = {kind: {} for kind in KINDS}
        self.problems: list[str] = []
        self.broken: set[str] = set()

    def add(self, item: Registered) -> None:
        existing = self.items[item.kind].get(item.name)
        if existing is not None:
            raise PluginError(
                f"{item.kind} '{item.name}' is registered twice: by {existing.package} "
                f"{existing.version} and by {item.package} {item.version}".replace("  ", " "))
        self.items[item.kind][item.name] = item

    def add_problem(self, plugin: str, message: str) -> None:
        """Record that ``plugin`` (a label) was skipped, in whole or in part, and why."""
        self.broken.add(plugin)
        self.problems.append(message)

    def get(self, kind: str, name: str) -> Registered:
        try:
            return self.items[kind][name]
        except KeyError:
            hint = ""
            if self.problems:
                count = len(self.broken) or len(self.problems)
                hint = f" ({count} plugin(s) failed to load: run privbench list)"
            raise PrivbenchError(
                f"unknown {kind} '{name}'; accepted: {accepted(self.items[kind])}{hint}") from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.items[kind])

    def all(self, kind: str) -> list[Registered]:
        return [self.items[kind][name] for name in self.names(kind)]


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus, per registered plugin name, where it came from and what went wrong.

    ``sources`` maps a registered plugin name to its (package, version) (what pluggy's
    ``list_plugin_distinfo`` gave for setuptools entry points); ``labels`` to the readable label
    problems use; ``problems`` lists (label, message) for every plugin skipped while loading.
    """

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, tuple[str, str]] = {}
        self.labels: dict[str, str] = {}
        self.problems: list[tuple[str, str]] = []

    def source_of(self, plugin_name: str) -> tuple[str, str]:
        """The (package, version) that supplied a registered plugin (its own name if none)."""
        return self.sources.get(plugin_name, (plugin_name, ""))

    def label_of(self, plugin_name: str) -> str:
        return self.labels.get(plugin_name, f"plugin {plugin_name}")


def make_plugin_manager(entry_points: bool = True, extra_plugins=()) -> PluginManager:
    """A fresh plugin manager with the entry-point plugins and ``extra_plugins`` registered.

    Nothing a plugin does wrong raises here: the plugin is left out and ``manager.problems`` says
    why.
    """
    manager = PluginManager()
    if entry_points:
        for entry_point in _entry_points():
            _load_entry_point(manager, entry_point)
    for plugin in extra_plugins:
        name = _plugin_name(plugin)
        _add_plugin(manager, plugin, name, f"plugin {name}", (name, ""))
    return manager


def _entry_points() -> list:
    """The ``privbench`` entry points: privbench's own first (the built-ins win a name clash),
    then the other packages' in a stable order."""
    import importlib.metadata
    found = list(importlib.metadata.entry_points(group=GROUP))
    return sorted(found, key=lambda ep: (_dist_name(ep) != OWN_DISTRIBUTION, _dist_name(ep), ep.name))


def _dist_name(entry_point) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "(unknown package)"
    try:
        name = dist.metadata["name"]
    except (AttributeError, KeyError, TypeError):
        name = None
    return name or getattr(dist, "name", None) or "(unknown package)"


def _dist_version(entry_point) -> str:
    dist = getattr(entry_point, "dist", None)
    return str(getattr(dist, "version", "") or "")


def _load_entry_point(manager: PluginManager, entry_point) -> None:
    """Import one entry point's module and register it as ``"<distribution>:<entry point>"``."""
    package, version = _dist_name(entry_point), _dist_version(entry_point)
    label = f"plugin '{entry_point.name}' from {package} {version}".rstrip()
    try:
        plugin = entry_point.load()
    except BaseException as error:  # noqa: BLE001 - any import failure (sys.exit too): skip it, say why
        manager.problems.append((label, f"{label} failed to import: {_exception_line(error)}"))
        return
    _add_plugin(manager, plugin, f"{package}:{entry_point.name}", label, (package, version))


def _add_plugin(manager: PluginManager, plugin, name: str, label: str,
                source: tuple[str, str]) -> None:
    """Register ``plugin``; if pluggy refuses it or its hooks match no privbench hook, leave it out
    and record why."""
    try:
        manager.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as error:
        manager.problems.append((label, f"{label} was skipped: {_first_line(str(error))}"))
        return
    manager.sources[name], manager.labels[name] = source, label
    callers = manager.get_hookcallers(plugin) or []
    unknown = sorted({caller.name for caller in callers if not caller.has_spec()
                      and any(impl.plugin is plugin and not impl.optionalhook
                              for impl in caller.get_hookimpls())})
    if unknown:
        manager.unregister(plugin, name=name)
        manager.problems.append((label, f"{label} was skipped: {_unknown_hooks_message(unknown)}"))
    elif not callers:
        manager.problems.append((label, f"{label} registers nothing: {_no_hooks_message(plugin)}"))


def _unknown_hooks_message(unknown: list[str]) -> str:
    parts = []
    for hook in unknown:
        close = difflib.get_close_matches(hook, HOOKS.values(), n=1)
        parts.append(f"'{hook}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return (f"its @privbench.hookimpl function {', '.join(parts)} matches no privbench hook; "
            f"hooks: {accepted(HOOKS.values())}")


def _no_hooks_message(plugin) -> str:
    what = f"module '{plugin.__name__}'" if hasattr(plugin, "__file__") else _plugin_name(plugin)
    undecorated = [hook for hook in HOOKS.values() if callable(getattr(plugin, hook, None))]
    hint = (f" ({', '.join(undecorated)} is defined but not decorated with @privbench.hookimpl)"
            if undecorated else "")
    return (f"{what} has no @privbench.hookimpl function{hint}; "
            f"hooks: {accepted(HOOKS.values())}")


def _exception_line(error: BaseException) -> str:
    text = _first_line(str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _plugin_name(plugin) -> str:
    """A readable name for a plugin registered without a distribution (module or class name)."""
    named = plugin if isinstance(plugin, type) or hasattr(plugin, "__file__") else type(plugin)
    return getattr(named, "__name__", repr(plugin))


def load_registry(entry_points: bool = True, extra_plugins=()) -> Registry:
    """Ask every plugin to register its datasets, defenses and attacks.

    A broken plugin (or one bad class) is skipped and described in ``registry.problems``; the
    others load as usual.
    """
    manager = make_plugin_manager(entry_points, extra_plugins)
    registry = Registry()
    for label, message in manager.problems:
        registry.add_problem(label, message)
    for kind, hook_name in HOOKS.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            package, version = manager.source_of(impl.plugin_name)
            label = manager.label_of(impl.plugin_name)
            register = (partial(_register_metric, registry, label) if kind == "metric" else
                        partial(_register, registry, kind, package, version, label))
            try:
                impl.function(register=register)
            except Exception as error:  # noqa: BLE001 - a plugin's own bug: skip the rest of it
                registry.add_problem(label, f"{label} failed in {hook_name}: {_exception_line(error)}")
    return registry


def _register(registry: Registry, kind: str, package: str, version: str, label: str,
              cls: type) -> None:
    """The ``register`` callback: validate one plugin class and add it to the registry.

    A bad class, or a name another package registered first, is left out and recorded as a problem
    (the first one registered keeps the name), so the plugin's other classes still register.
    """
    try:
        _check_plugin_class(kind, package, cls)
    except PluginError as error:
        registry.add_problem(label, error.message)
        return
    try:
        registry.add(Registered(kind, cls.name, cls, package, version))
    except PluginError as error:
        kept = registry.items[kind][cls.name]
        registry.add_problem(label, f"{error.message}; kept the one from {kept.package} "
                                    f"{kept.version}".rstrip())


def _register_metric(registry: Registry, label: str, spec) -> None:
    """The ``register`` callback of ``register_metrics``: declare one MetricSpec."""
    from privbench.metrics import MetricSpec, register_metric
    if not isinstance(spec, MetricSpec):
        registry.add_problem(label, f"{label} registered {spec!r} as a metric, but it is not a "
                                    "privbench.api.MetricSpec")
        return
    try:
        register_metric(spec)
    except PrivbenchError as error:
        registry.add_problem(label, f"{label}: {error.message}")


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
        from privbench.scoring import PRIVACY_MAPPINGS
        if cls.produces not in PRIVACY_MAPPINGS:
            raise PluginError(f"{where} producing {cls.produces!r}; accepted: "
                              f"{accepted(PRIVACY_MAPPINGS)}")
