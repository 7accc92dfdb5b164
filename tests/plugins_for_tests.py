"""Plugins the tests register directly (no entry point): edge cases of the matrix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from privbench import hookimpl
from privbench.api import Attack, AttackOutput, Defense, Protection, classifier


@dataclass
class Sealed(Defense):
    """A defense that lets nobody query its encoder."""

    name: ClassVar[str] = "sealed"
    summary: ClassVar[str] = "test defense that withholds query access"
    gives: ClassVar[frozenset[str]] = frozenset({"server"})
    withheld_reasons: ClassVar[dict[str, str]] = {"query": "the sealed encoder answers no queries"}

    def build(self, facts) -> Protection:
        return Protection(encoder=nn.Identity(),
                          server=classifier(facts.arch, facts.image_shape, facts.classes()))

    def fit(self, owner) -> Protection:
        return Protection(encoder=nn.Identity(), server=owner.target_model())


@dataclass
class Crashing(Attack):
    """An attack that raises on every run."""

    name: ClassVar[str] = "crashing"
    summary: ClassVar[str] = "test attack that raises"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, view) -> AttackOutput:
        raise RuntimeError("the attack broke on purpose")


@dataclass
class Interrupting(Attack):
    """An attack whose run is interrupted (as by Ctrl-C) when ``after`` cells ran before it."""

    name: ClassVar[str] = "interrupting"
    summary: ClassVar[str] = "test attack that raises KeyboardInterrupt"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, view) -> AttackOutput:
        raise KeyboardInterrupt


@dataclass
class KillsItsProcess(Attack):
    """An attack whose worker process dies mid-run (as on an out-of-memory kill)."""

    name: ClassVar[str] = "kills-its-process"
    summary: ClassVar[str] = "test attack that ends its process abruptly"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, view) -> AttackOutput:
        import os
        os._exit(3)


@dataclass
class Counting(Attack):
    """A cheap attack: "reconstructs" each observed image as a queried aux image (a wrong guess)."""

    name: ClassVar[str] = "counting"
    summary: ClassVar[str] = "test attack answering queried aux images as reconstructions"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, view) -> AttackOutput:
        aux = view.aux_images
        return AttackOutput(reconstruction=view.query(aux[: len(view.observed)]))


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
