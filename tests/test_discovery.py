"""Plugin discovery: every package's entry points load, and a broken plugin never blocks the rest.

The entry points are faked (``importlib.metadata.entry_points`` monkeypatched) and point to modules
written into ``tmp_path``, so no package is installed and the built-ins are not loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
import textwrap
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import pytest
from click.testing import CliRunner

from privbench import hookimpl
from privbench.cli import main
from privbench.core import Defense
from privbench.errors import PrivbenchError
from privbench.plugins import load_registry, make_plugin_manager

HEADER = """\
from dataclasses import dataclass
from typing import ClassVar

from privbench import hookimpl
from privbench.core import Defense


def defense(defense_name, text="a test defense"):
    @dataclass
    class Made(Defense):
        name: ClassVar[str] = defense_name
        summary: ClassVar[str] = text
    return Made
"""


@dataclass
class FakeEntryPoint:
    """What the loader uses of an ``importlib.metadata.EntryPoint``: name, dist and load()."""

    name: str
    value: str
    dist: SimpleNamespace
    group: str = "privbench"

    def load(self):
        return importlib.import_module(self.value)


def fake_dist(name: str, version: str = "1.0") -> SimpleNamespace:
    return SimpleNamespace(metadata={"name": name}, name=name, version=version)


@pytest.fixture
def plugin_env(tmp_path, monkeypatch, request):
    """``add(dist, ep_name, body)``: a module with ``body`` served as entry point ``ep_name`` of
    the fake distribution ``dist``; only these entry points are seen."""
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_points: list[FakeEntryPoint] = []
    modules: list[str] = []
    prefix = "pbfake_" + "".join(c if c.isalnum() else "_" for c in request.node.name)

    def fake_entry_points(**params):
        assert params == {"group": "privbench"}
        return list(entry_points)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)

    def add(dist: str, ep_name: str, body: str, version: str = "1.0") -> str:
        module = f"{prefix}_{len(modules)}"
        (tmp_path / f"{module}.py").write_text(HEADER + textwrap.dedent(body))
        modules.append(module)
        entry_points.append(FakeEntryPoint(ep_name, module, fake_dist(dist, version)))
        return module

    importlib.invalidate_caches()
    yield add
    for module in modules:
        sys.modules.pop(module, None)


ADDS_ALPHA = """
@hookimpl
def register_defenses(register):
    register(defense("alpha"))
"""

ADDS_BETA = """
@hookimpl
def register_defenses(register):
    register(defense("beta"))
"""


def test_same_entry_point_name_in_two_packages_both_load(plugin_env):
    plugin_env("pkg-one", "noise", ADDS_ALPHA, version="1.2")
    plugin_env("pkg-two", "noise", ADDS_BETA, version="3.4")
    registry = load_registry()
    assert registry.problems == []
    assert registry.names("defense") == ["alpha", "beta"]
    alpha, beta = registry.get("defense", "alpha"), registry.get("defense", "beta")
    assert (alpha.package, alpha.version) == ("pkg-one", "1.2")
    assert (beta.package, beta.version) == ("pkg-two", "3.4")


def test_plugins_are_registered_under_distribution_qualified_names(plugin_env):
    plugin_env("pkg-one", "noise", ADDS_ALPHA, version="1.2")
    plugin_env("pkg-two", "noise", ADDS_BETA)
    manager = make_plugin_manager()
    assert manager.has_plugin("pkg-one:noise") and manager.has_plugin("pkg-two:noise")
    assert manager.sources["pkg-one:noise"] == ("pkg-one", "1.2")


def test_duplicate_item_name_keeps_the_first_and_names_both_packages(plugin_env):
    plugin_env("zeta-pkg", "mine", ADDS_ALPHA, version="2.0")
    plugin_env("privbench", "builtin", ADDS_ALPHA, version="0.1.0")  # privbench's own load first
    plugin_env("beta-pkg", "other", ADDS_BETA)
    registry = load_registry()
    assert registry.get("defense", "alpha").package == "privbench"
    assert registry.names("defense") == ["alpha", "beta"]
    [problem] = registry.problems
    assert "defense 'alpha' is registered twice" in problem
    assert "privbench 0.1.0" in problem and "zeta-pkg 2.0" in problem
    assert problem.endswith("kept the one from privbench 0.1.0")


def test_a_module_without_hookimpl_is_reported(plugin_env):
    plugin_env("good-pkg", "good", ADDS_ALPHA)
    module = plugin_env("lazy-pkg", "lazy", """
def register_defenses(register):  # forgot @hookimpl
    register(defense("never"))
""", version="0.3")
    registry = load_registry()
    assert registry.names("defense") == ["alpha"]
    [problem] = registry.problems
    assert "plugin 'lazy' from lazy-pkg 0.3" in problem
    assert f"module '{module}'" in problem
    assert "has no @privbench.hookimpl function" in problem
    assert "register_defenses is defined but not decorated" in problem


def test_a_misspelt_hook_suggests_the_closest_and_skips_only_that_plugin(plugin_env):
    plugin_env("good-pkg", "good", ADDS_ALPHA)
    plugin_env("typo-pkg", "typo", """
@hookimpl
def register_defences(register):
    register(defense("never"))

@hookimpl
def register_defenses(register):  # a correct hook too: the broken plugin is skipped as a whole
    register(defense("half"))
""")
    registry = load_registry()
    assert registry.names("defense") == ["alpha"]
    [problem] = registry.problems
    assert problem.startswith("plugin 'typo' from typo-pkg 1.0 was skipped")
    assert "'register_defences' (did you mean 'register_defenses'?)" in problem
    assert "\n" not in problem


def test_a_misspelt_hook_of_an_extra_plugin_is_a_problem_too():
    class MisspeltHook:
        @hookimpl
        def register_attack(self, register):
            pass

    registry = load_registry(entry_points=False, extra_plugins=[MisspeltHook()])
    [problem] = registry.problems
    assert "MisspeltHook" in problem and "did you mean 'register_attacks'?" in problem


@pytest.mark.parametrize("body, expected", [
    ("import pbfake_no_such_dependency\n",
     "failed to import: ModuleNotFoundError: No module named 'pbfake_no_such_dependency'"),
    ("raise RuntimeError('needs a GPU')\n", "failed to import: RuntimeError: needs a GPU"),
])
def test_a_module_that_fails_to_import_is_skipped(plugin_env, body, expected):
    plugin_env("good-pkg", "good", ADDS_ALPHA)
    plugin_env("broken-pkg", "broken", body, version="0.9")
    registry = load_registry()
    assert registry.names("defense") == ["alpha"]
    assert registry.problems == [f"plugin 'broken' from broken-pkg 0.9 {expected}"]


def test_a_bad_class_is_a_problem_and_the_plugins_other_classes_still_register(plugin_env):
    plugin_env("mixed-pkg", "mixed", """
@hookimpl
def register_defenses(register):
    register(dict)
    register(defense("has space"))
    register(defense("fine"))
""")
    plugin_env("good-pkg", "good", ADDS_BETA)
    registry = load_registry()
    assert registry.names("defense") == ["beta", "fine"]
    assert len(registry.problems) == 2
    assert "mixed-pkg registered <class 'dict'> as a defense, but it is not a subclass" in \
        registry.problems[0]
    assert "with the name 'has space'" in registry.problems[1]


def test_a_hook_that_raises_is_a_problem(plugin_env):
    plugin_env("crash-pkg", "crash", """
@hookimpl
def register_defenses(register):
    register(defense("before"))
    raise KeyError("oops")
""")
    plugin_env("good-pkg", "good", ADDS_BETA)
    registry = load_registry()
    assert registry.names("defense") == ["before", "beta"]
    assert registry.problems == [
        "plugin 'crash' from crash-pkg 1.0 failed in register_defenses: KeyError: 'oops'"]


def test_unknown_name_hints_at_plugins_that_failed_to_load(plugin_env):
    plugin_env("good-pkg", "good", ADDS_ALPHA)
    plugin_env("broken-pkg", "broken", "raise ImportError('gone')\n")
    plugin_env("typo-pkg", "typo", "@hookimpl\ndef register_defense(register):\n    pass\n")
    registry = load_registry()
    with pytest.raises(PrivbenchError) as error:
        registry.get("defense", "broken-one")
    assert error.value.message == ("unknown defense 'broken-one'; accepted: alpha "
                                   "(2 plugin(s) failed to load: run privbench list)")


def test_unknown_name_without_problems_has_no_hint(plugin_env):
    plugin_env("good-pkg", "good", ADDS_ALPHA)
    with pytest.raises(PrivbenchError) as error:
        load_registry().get("defense", "nope")
    assert error.value.message == "unknown defense 'nope'; accepted: alpha"


def test_list_prints_problems_after_every_working_plugin(plugin_env):
    plugin_env("good-pkg", "good", ADDS_ALPHA)
    plugin_env("broken-pkg", "broken", "raise ImportError('gone')\n")
    result = CliRunner().invoke(main, ["list", "defenses"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("alpha" in line and "good-pkg 1.0" in line for line in lines)
    assert lines[-1] == ("broken plugin: plugin 'broken' from broken-pkg 1.0 failed to import: "
                         "ImportError: gone")


def test_list_json_has_a_problems_key(plugin_env):
    plugin_env("good-pkg", "good", ADDS_ALPHA)
    result = CliRunner().invoke(main, ["list", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["problems"] == []
    plugin_env("broken-pkg", "broken", "raise ImportError('gone')\n")
    result = CliRunner().invoke(main, ["list", "defenses", "--format", "json"])
    listing = json.loads(result.stdout)
    assert [d["name"] for d in listing["defenses"]] == ["alpha"]
    assert listing["problems"] == [
        "plugin 'broken' from broken-pkg 1.0 failed to import: ImportError: gone"]


def test_an_extra_plugin_without_hooks_is_reported():
    class Forgetful:
        def register_defenses(self, register):
            @dataclass
            class Never(Defense):
                name: ClassVar[str] = "never"
                summary: ClassVar[str] = "never registered"
            register(Never)

    registry = load_registry(entry_points=False, extra_plugins=[Forgetful()])
    assert registry.names("defense") == []
    [problem] = registry.problems
    assert "Forgetful" in problem and "no @privbench.hookimpl function" in problem


def test_real_entry_points_load_under_qualified_names():
    manager = make_plugin_manager()
    package, version = manager.sources["privbench:identity"]
    assert package == "privbench" and version == importlib.metadata.version("privbench")
    assert load_registry(entry_points=False).problems == []
