"""The conformance kit: check a defense, attack or dataset class against privbench's contracts.

Plugin authors call these from their own pytest tests, as privbench's built-in plugins do::

    from privbench.testing import check_attack, check_defense

    def test_my_defense_keeps_the_contract():
        check_defense(MyDefense, {"strength": 0.5})

    def test_my_attack_keeps_the_contract():
        check_attack(MyAttack, {"epochs": 2}, defense="identity")

Every check runs on a tiny offline scenario (scikit-learn's digits, a few hundred images, a target
model of a few epochs) through the same harness as ``privbench matrix``, so what passes here runs
there. Each check raises ``AssertionError`` with a sentence naming the broken contract.

- ``check_registers``: the class passes the registry's checks (name, summary, threat model, access
  facts, output kind) under the plugin's hook.
- ``check_params``: every declared parameter rejects a bad value with a one-line error that names it.
- ``check_defense``: ``fit`` gives modules that ``build`` can rebuild from their state dicts, the
  server reads the encoder's output, and a second fit from the same seed is bit-identical.
- ``check_attack``: the attack runs on its view alone (an undeclared access fails with
  ``AccessDenied``), its output scores (privacy.score in [0, 1], every metric registered), and the
  same seed gives the same metrics.
- ``run_cell``: one cell through the harness, for behaviour tests (e.g. a stronger setting lowers
  what an attack recovers).
"""

from __future__ import annotations

from typing import Any

import torch

from privbench.artifacts import ArtifactCache, SharedArtifacts
from privbench.context import RunContext
from privbench.errors import PrivbenchError
from privbench.harness import Harness
from privbench.params import ParamInfo, format_spec
from privbench.progress import SilentProgress
from privbench.schedule import CellPlan, PluginCall

TINY_DIGITS = {"limit": 400, "target_epochs": 3}


def call_of(cls: type, params: dict[str, Any] | None = None) -> PluginCall:
    """A plugin class with validated parameters, as the matrix would run it."""
    instance = cls.from_params(params or {})
    defaults = {info.name: info.default for info in cls.parameters()}
    changed = {k: v for k, v in instance.params().items() if defaults.get(k) != v}
    return PluginCall(cls.kind, cls.name, instance.params(), format_spec(cls.name, changed), instance,
                      "conformance-kit")


def dataset_call(dataset: Any = "digits", params: dict[str, Any] | None = None) -> PluginCall:
    """A dataset by registered name (with TINY_DIGITS for digits) or by class."""
    if isinstance(dataset, str):
        from privbench.plugins import load_registry
        cls = load_registry().get("dataset", dataset).cls
        params = {**(TINY_DIGITS if dataset == "digits" else {}), **(params or {})}
    else:
        cls = dataset
    return call_of(cls, params)


_PROCESS_CACHE = ArtifactCache(None)  # in memory: target models and fits are shared by a test session


def harness(cache: ArtifactCache | None = None) -> Harness:
    """A harness on the CPU; by default its shared artifacts (target models, fitted defenses) are
    kept in memory for the rest of this process, so a test suite trains each one once."""
    return Harness(RunContext(cache=cache or _PROCESS_CACHE))


def _defense_call(defense: Any, params: dict | None) -> PluginCall:
    if isinstance(defense, str):
        from privbench.plugins import load_registry
        return call_of(load_registry().get("defense", defense).cls, params)
    return call_of(defense, params)


def run_cell(defense: Any, attack: type, *, defense_params: dict | None = None,
             attack_params: dict | None = None, dataset: Any = "digits",
             dataset_params: dict | None = None, seed: int = 0,
             runner: Harness | None = None) -> dict[str, float]:
    """The metrics of one cell (defense name or class, attack class) run through the harness.

    A failed cell raises AssertionError with its reason; a not-applicable one, too."""
    from privbench.plugins import load_registry
    from privbench.schedule import Job, probe_call
    runner = runner or harness()
    data, attack_call = dataset_call(dataset, dataset_params), call_of(attack, attack_params)
    cell = CellPlan(data, _defense_call(defense, defense_params), attack_call, seed,
                    probe_call(load_registry(), data, attack_call))
    prepared = runner.do(Job("defense", (cell,)))
    if prepared.settled:
        raise AssertionError(f"the cell did not run: {prepared.settled[0].status}: "
                             f"{prepared.settled[0].reason}")
    (done,) = runner.do(Job("cell", (cell,))).settled
    if done.status != "done":
        raise AssertionError(f"the cell {done.status}: {done.reason}\n{done.error or ''}")
    return done.metrics


# -- the checks -----------------------------------------------------------------------------------------

def check_registers(cls: type) -> None:
    """The class registers under its kind's hook without a problem."""
    from privbench import hookimpl
    from privbench.plugins import HOOKS, load_registry

    class OnePlugin:
        pass

    hook = HOOKS[cls.kind]
    setattr(OnePlugin, hook, hookimpl(lambda self, register: register(cls)))
    registry = load_registry(entry_points=False, extra_plugins=[OnePlugin()])
    assert not registry.problems, f"{cls.__name__} does not register: {registry.problems[0]}"
    assert registry.get(cls.kind, cls.name).cls is cls


def bad_values(info: ParamInfo) -> list[Any]:
    """Values a parameter of this declaration must reject."""
    values: list[Any] = []
    if info.type in (int, float):
        values += ["not-a-number", "nan"]
        if info.minimum is not None:
            values.append(info.minimum - 1)
        if info.maximum is not None:
            values.append(info.maximum + 1)
    if info.type is bool:
        values.append("maybe")
    if info.choices:
        values.append("no-such-choice")
    return values


def check_params(cls: type) -> None:
    """Every parameter rejects its bad values with a one-line error naming the parameter."""
    for info in cls.parameters():
        for value in bad_values(info):
            try:
                cls.from_params({info.name: value})
            except PrivbenchError as error:
                message = error.format_message()
                assert "\n" not in message, f"{cls.name}: the error for {info.name}={value!r} is " \
                                            "not one line"
                assert info.name in message, f"{cls.name}: the error for {info.name}={value!r} " \
                                             f"does not name the parameter: {message}"
            else:
                raise AssertionError(f"{cls.name}: parameter {info.name} accepted the bad value {value!r}")


def fresh_artifacts() -> SharedArtifacts:
    """Shared artifacts with an empty in-memory cache: everything is trained anew."""
    return SharedArtifacts(ArtifactCache(None), torch.device("cpu"), SilentProgress())


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def check_defense(cls: type, params: dict | None = None, *, dataset: Any = "digits",
                  dataset_params: dict | None = None, seed: int = 0) -> None:
    """Registration, parameters, and a fit that rebuilds, serves and repeats bit for bit."""
    check_registers(cls)
    check_params(cls)
    defense = call_of(cls, params)
    data = dataset_call(dataset, dataset_params)
    scenario = harness().scenario(data, seed)
    problem = defense.instance.check_data(scenario.facts())
    assert problem is None, f"{cls.name} refuses the test dataset: {problem}"
    first, second = (fresh_artifacts().protection(scenario, defense)[0] for _ in range(2))
    assert _states_equal(first.encoder, second.encoder) and _states_equal(first.server, second.server), \
        f"{cls.name}: two fits from the same seed differ (draw randomness only from the harness's streams)"
    test = scenario.images("test")[:16]
    with torch.no_grad():
        logits = first.server.eval()(first.encoder.eval()(test))
    assert logits.shape == (len(test), scenario.classes()), \
        f"{cls.name}: server(encoder(x)) has shape {tuple(logits.shape)}, expected one row of " \
        f"{scenario.classes()} logits per image"


def check_attack(cls: type, params: dict | None = None, *, defense: Any = "identity",
                 defense_params: dict | None = None, dataset: Any = "digits",
                 dataset_params: dict | None = None, seed: int = 0) -> dict[str, float]:
    """Registration, parameters, a run on the view alone that scores, the same numbers twice."""
    from privbench.metrics import METRICS
    check_registers(cls)
    check_params(cls)
    runner = harness()
    kwargs = {"defense_params": defense_params, "attack_params": params, "dataset": dataset,
              "dataset_params": dataset_params, "seed": seed}
    metrics = run_cell(defense, cls, runner=runner, **kwargs)
    assert 0.0 <= metrics["privacy.score"] <= 1.0, f"{cls.name}: privacy.score out of [0, 1]"
    unknown = [name for name in metrics if name not in METRICS]
    assert not unknown, f"{cls.name}: unregistered metric {unknown[0]}"
    again = run_cell(defense, cls, runner=harness(), **kwargs)
    changed = {k for k in metrics if not k.startswith("cost.") and metrics[k] != again.get(k)}
    assert not changed, f"{cls.name}: the same seed gave other values for {sorted(changed)}"
    return metrics
