"""The plugin manager: built-ins through entry points, validation, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from plugins_for_tests import BadAttackAccess, DuplicateBoxBlur, MisspeltHook, NotADefense

from privbench.errors import PrivbenchError
from privbench.plugins import load_registry

BUILTIN_DEFENSES = {"identity", "noise"}
BUILTIN_ATTACKS = {"inverse-network", "attribute-inference"}
BUILTIN_DATASETS = {"digits", "lfw-subset", "mnist", "fashion-mnist", "cifar10", "celeba"}


def test_builtins_load_through_the_entry_points(registry):
    assert BUILTIN_DEFENSES <= set(registry.names("defense"))
    assert BUILTIN_ATTACKS <= set(registry.names("attack"))
    assert BUILTIN_DATASETS <= set(registry.names("dataset"))
    assert registry.get("defense", "identity").package == "privbench"


def test_without_entry_points_nothing_is_registered():
    registry = load_registry(entry_points=False)
    assert registry.names("defense") == [] and registry.names("attack") == []


def test_unknown_name_lists_what_is_accepted(registry):
    with pytest.raises(PrivbenchError, match=r"unknown defense 'nope'; accepted: .*identity"):
        registry.get("defense", "nope")


def test_duplicate_name_names_both_packages_and_keeps_the_first():
    registry = load_registry(extra_plugins=[DuplicateBoxBlur()])
    [problem] = [p for p in registry.problems if "box-blur" in p]
    assert "privbench-example-plugin" in problem and "DuplicateBoxBlur" in problem
    assert registry.get("defense", "box-blur").package == "privbench-example-plugin"


def test_misspelt_hook_is_a_problem_naming_the_closest_hook():
    registry = load_registry(entry_points=False, extra_plugins=[MisspeltHook()])
    [problem] = registry.problems
    assert "'register_defense' (did you mean 'register_defenses'?)" in problem


def test_registering_a_non_plugin_class_is_a_problem():
    registry = load_registry(entry_points=False, extra_plugins=[NotADefense()])
    [problem] = registry.problems
    assert "not a subclass" in problem and registry.names("defense") == []


def test_unknown_access_requirement_is_a_problem():
    registry = load_registry(entry_points=False, extra_plugins=[BadAttackAccess()])
    [problem] = registry.problems
    assert "telepathy" in problem and registry.names("attack") == []


def test_importing_privbench_loads_no_plugin_and_no_torch():
    code = ("import sys, privbench, privbench.cli, privbench.plugins; "
            "print('torch' in sys.modules, any(m.startswith('privbench_plugins') for m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.split() == ["False", "False"]
