"""Plugins the tests register directly (no entry point): edge cases of the matrix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from privbench import hookimpl
from privbench.core import Attack, AttackResult, Defense, Protection


@dataclass
class Sealed(Defense):
    """A defense that lets nobody query its encoder."""

    name: ClassVar[str] = "sealed"
    summary: ClassVar[str] = "test defense that withholds query access"
    gives: ClassVar[frozenset[str]] = frozenset({"server"})
    withheld_reasons: ClassVar[dict[str, str]] = {"query": "the sealed encoder answers no queries"}

    def fit(self, scenario, ctx) -> Protection:
        return Protection(encoder=nn.Identity(), server=ctx.target_model(scenario))


@dataclass
class Crashing(Attack):
    """An attack that raises on every run."""

    name: ClassVar[str] = "crashing"
    summary: ClassVar[str] = "test attack that raises"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, scenario, protection, ctx) -> AttackResult:
        raise RuntimeError("the attack broke on purpose")


@dataclass
class Interrupting(Attack):
    """An attack whose run is interrupted (as by Ctrl-C) when ``after`` cells ran before it."""

    name: ClassVar[str] = "interrupting"
    summary: ClassVar[str] = "test attack that raises KeyboardInterrupt"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, scenario, protection, ctx) -> AttackResult:
        raise KeyboardInterrupt


@dataclass
class KillsItsProcess(Attack):
    """An attack whose worker process dies mid-run (as on an out-of-memory kill)."""

    name: ClassVar[str] = "kills-its-process"
    summary: ClassVar[str] = "test attack that ends its process abruptly"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, scenario, protection, ctx) -> AttackResult:
        import os
        os._exit(3)


@dataclass
class Counting(Attack):
    """A cheap attack: the mean absolute pixel change the encoder makes."""

    name: ClassVar[str] = "counting"
    summary: ClassVar[str] = "test attack measuring the encoder's mean pixel change"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, scenario, protection, ctx) -> AttackResult:
        test = scenario.images("test")
        change = float((protection.encoder(test) - test).abs().mean())
        return AttackResult({"attack.mean_change": change, "privacy.score": min(1.0, change)})


class EdgeCasePlugins:
    """Registers the test defense and attacks."""

    @hookimpl
    def register_defenses(self, register):
        register(Sealed)

    @hookimpl
    def register_attacks(self, register):
        for attack in (Crashing, Interrupting, KillsItsProcess, Counting):
            register(attack)


class DuplicateBoxBlur:
    """Claims the name of the example plugin's defense."""

    @hookimpl
    def register_defenses(self, register):
        @dataclass
        class Impostor(Defense):
            name: ClassVar[str] = "box-blur"
            summary: ClassVar[str] = "a second box-blur"
        register(Impostor)


class MisspeltHook:
    @hookimpl
    def register_defense(self, register):  # the hook is register_defenses
        pass


class NotADefense:
    @hookimpl
    def register_defenses(self, register):
        register(dict)


class BadAttackAccess:
    @hookimpl
    def register_attacks(self, register):
        @dataclass
        class Greedy(Attack):
            name: ClassVar[str] = "greedy"
            summary: ClassVar[str] = "asks for access nobody defines"
            requires: ClassVar[frozenset[str]] = frozenset({"telepathy"})
        register(Greedy)


def imported(modules: list[str]) -> list[bool]:
    """Whether each module is imported in this process (asked of a worker process)."""
    import sys
    return [name in sys.modules for name in modules]
