"""The pluggy hook specifications: one per plugin kind, each a one-line contract.

A plugin module implements any of these with ``@privbench.hookimpl`` and is listed under the
``[project.entry-points.privbench]`` table of its package.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("privbench")
hookimpl = pluggy.HookimplMarker("privbench")


@hookspec
def register_datasets(register):
    """Call ``register(DatasetClass)`` for each dataset (a ``privbench.api.DatasetSource`` subclass)."""


@hookspec
def register_defenses(register):
    """Call ``register(DefenseClass)`` for each defense (a ``privbench.api.Defense`` subclass)."""


@hookspec
def register_attacks(register):
    """Call ``register(AttackClass)`` for each attack (a ``privbench.api.Attack`` subclass)."""


@hookspec
def register_metrics(register):
    """Call ``register(MetricSpec)`` for each metric (``attack.*`` diagnostic or ``defense.*`` fact)
    this plugin's attacks or defenses report (``privbench.api.MetricSpec``)."""
