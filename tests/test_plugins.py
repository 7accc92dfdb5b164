"""The plugin manager: built-ins through entry points, validation, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from plugins_for_tests import BadAttackAccess, DuplicateBoxBlur, MisspeltHook, NotADefense

from privbench.errors import PluginError, PrivbenchError
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


def test_duplicate_name_names_both_packages():
    with pytest.raises(PluginError) as error:
        load_registry(extra_plugins=[DuplicateBoxBlur()])
    message = str(error.value.message)
    assert "box-blur" in message
    assert "privbench-example-plugin" in message and "DuplicateBoxBlur" in message


def test_misspelt_hook_is_an_error():
    with pytest.raises(PluginError, match="register_defense"):
        load_registry(entry_points=False, extra_plugins=[MisspeltHook()])


def test_registering_a_non_plugin_class_is_an_error():
    with pytest.raises(PluginError, match="not a subclass"):
        load_registry(entry_points=False, extra_plugins=[NotADefense()])


def test_unknown_access_requirement_is_an_error():
    with pytest.raises(PluginError, match="telepathy"):
        load_registry(entry_points=False, extra_plugins=[BadAttackAccess()])


def test_importing_privbench_loads_no_plugin_and_no_torch():
    code = ("import sys, privbench, privbench.cli, privbench.plugins; "
            "print('torch' in sys.modules, any(m.startswith('privbench_plugins') for m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.split() == ["False", "False"]
