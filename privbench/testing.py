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
  server reads the encoder's output, a second fit from the same seed is bit-identical, and the
  owner's path and the query path encode the same batch alike (identical for a deterministic
  defense, from the same distribution for a random one), whatever came before it.
- ``check_attack``: the attack runs on its view alone (an undeclared access fails with
  ``AccessDenied``), its output scores (privacy.score in [0, 1], every metric registered), the
  same seed gives the same metrics, and it does not read the harness's ground truth: run against
  a harness whose test images are decoys (the observed encodings come from other images), its
  output must not match the decoys better than the images it observed.

Every check runs the plugin in party processes, as ``privbench matrix`` does.
- ``run_cell``: one cell through the harness, for behaviour tests (e.g. a stronger setting lowers
  what an attack recovers).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from privbench.artifacts import ArtifactCache
from privbench.context import RunContext
from privbench.errors import PrivbenchError
from privbench.harness import Harness
from privbench.params import ParamInfo, format_spec
from privbench.parties.messages import EncodeRequest
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
# The kit's run secret. Public and fixed, so that a plugin's tests split, fit and score the same way
# on every machine and every run (a test suite's cached target models are shared across its
# stores too). A real run's secret is drawn once per store and never public.
KIT_SECRET = 0x5EC12E7_0F_7E575


def harness(cache: ArtifactCache | None = None, *, trust_plugins: bool = False,
            cell_timeout: float | None = None, harness_class: type | None = None) -> Harness:
    """A harness on the CPU; by default its shared artifacts (target models, fitted defenses) are
    kept in memory for the rest of this process, so a test suite trains each one once."""
    ctx = RunContext(cache=cache or _PROCESS_CACHE, secret=KIT_SECRET, trust_plugins=trust_plugins,
                     cell_timeout=cell_timeout)
    return (harness_class or Harness)(ctx)


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


class FittedDefenses:
    """Fitted defenses as modules in this process, for a plugin's own behaviour tests: fitted
    through ``runner`` (in a defender's process, through its cache), rebuilt here from their
    states with ``build``."""

    def __init__(self, runner: Harness | None = None) -> None:
        self.runner = runner or harness()

    def protection(self, scenario, defense: PluginCall):
        """The fitted ``Protection`` and its fit time in seconds."""
        states, fit_s = self.runner.protection(scenario, defense)
        return self.rebuild(scenario, defense, states), fit_s

    @staticmethod
    def rebuild(scenario, defense: PluginCall, states: dict):
        from privbench.parties.roles import rebuilt
        return rebuilt(defense.instance, scenario.facts(), torch.device("cpu"),
                       encoder_state=states["encoder"], server_state=states["server"],
                       seed=scenario.streams.defender)


def fresh_artifacts(trust_plugins: bool = False) -> FittedDefenses:
    """Fitted defenses from an empty in-memory cache: everything is fitted anew."""
    return FittedDefenses(harness(ArtifactCache(None), trust_plugins=trust_plugins))


def attack_view(runner: Harness, cell: CellPlan, observed: torch.Tensor | None = None, count: int = 5):
    """The attacker's view of ``cell`` built in this process as its party would build it (its
    calls answered by ``runner``), without running the attack: for tests of the view itself."""
    from privbench.harness import QueryService
    from privbench.parties.channel import LocalChannel
    from privbench.parties.roles import attack_view as build_view
    from privbench.progress import SilentProgress
    scenario = runner.scenario(cell.dataset, cell.seed)
    states, _ = runner.protection(scenario, cell.defense)
    if observed is None:
        observed = runner.owner_encoding(scenario, cell.defense)["encoded"][:count]
    probes, _ = runner.probes(scenario, scenario, cell)
    request = runner.attack_request(scenario, scenario, cell, states, observed, probes)
    channel = LocalChannel(QueryService(runner, scenario, cell).handlers(request.granted), SilentProgress())
    return build_view(request, channel, torch.device("cpu"))


def _states_equal(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(
        a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for a, b in ((first[part], second[part]) for part in first))


def check_defense(cls: type, params: dict | None = None, *, dataset: Any = "digits",
                  dataset_params: dict | None = None, seed: int = 0, trust_plugins: bool = False) -> None:
    """Registration, parameters, a fit that rebuilds, serves and repeats bit for bit, and one
    encoding path for the owner's images and the attacker's queries."""
    check_registers(cls)
    check_params(cls)
    defense = call_of(cls, params)
    runner = harness(ArtifactCache(None), trust_plugins=trust_plugins)
    scenario = runner.scenario(dataset_call(dataset, dataset_params), seed)
    problem = defense.instance.check_data(scenario.facts())
    assert problem is None, f"{cls.name} refuses the test dataset: {problem}"
    first, second = runner.fit(scenario, defense), runner.fit(scenario, defense)
    assert _states_equal(first, second), \
        f"{cls.name}: two fits from the same seed differ (draw randomness only from the harness's streams)"
    metrics = runner.utility(scenario, defense)  # the service's process reads the owner's encodings
    assert 0.0 <= metrics["utility.accuracy"] <= 1.0
    check_one_encoding_path(runner, scenario, defense, first)


def check_one_encoding_path(runner: Harness, scenario, defense: PluginCall, states: dict) -> None:
    """The attacker's queries go through the owner's encoder: test images queried after other
    queries encode as the owner's own encoding of them did (the tensor utility was measured on),
    identically for a deterministic defense, with the same mean and spread for a random one."""
    count = min(64, len(scenario.images("test")))
    owner = runner.owner_encoding(scenario, defense)["encoded"][:count]
    batch = runner.owner_images(scenario)[:count]
    noise = torch.rand((32, *scenario.image_shape), generator=torch.Generator().manual_seed(count))
    request = EncodeRequest(defense.instance, scenario.facts(), states["encoder"], scenario.streams.query)
    encoder = runner.parties.encoder(request, label=f"defense '{defense.spec}' (encoder)",
                                     limit_s=runner.limit_s(defense.instance.cost_hint))
    try:
        queried = [encoder.encode(images) for images in (noise, batch)][-1]
    finally:
        encoder.close()
    if torch.equal(owner, queried):
        return
    owner, queried = owner.flatten(1).double(), queried.flatten(1).double()
    spread = float(torch.cat([owner, queried]).std()) + 1e-6
    mean_gap = abs(float(owner.mean() - queried.mean())) / spread
    std_ratio = (float(queried.std()) + 1e-6) / (float(owner.std()) + 1e-6)
    assert mean_gap < 0.1 and 0.8 < std_ratio < 1.25, \
        f"{defense.name}: the same images encode differently as the owner's and as queries (mean " \
        f"gap {mean_gap:.2f} spread, std ratio {std_ratio:.2f}): the owner's images and the " \
        "attacker's queries must go through one encoder"


class DecoyHarness(Harness):
    """A harness whose test images are decoys. The data owner sends other images (the test split
    rolled by half its length), so the attack observes their encodings, while the scenario, the
    ground truth and every object a cheat could find in the harness hold the decoys. Each output is
    scored twice: against the decoys (``metrics``) and against the images the attack observed
    (``observed_metrics``)."""

    sent_images = "test rolled by half (decoy check)"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.observed_metrics: dict[str, dict[str, float]] = {}

    def owner_images(self, scenario) -> torch.Tensor:
        return self._rolled(scenario.images("test"))

    @staticmethod
    def _rolled(values: torch.Tensor) -> torch.Tensor:
        return values.roll(len(values) // 2, dims=0)

    def score(self, plain, scenario, cell: CellPlan, index, out_ids, observed):
        from privbench.parties.messages import output_from_plain
        from privbench.scoring import score
        metrics, artifacts = super().score(plain, scenario, cell, index, out_ids, observed)
        decoy = self.ground_truth(scenario, index, out_ids)
        sent = dataclasses.replace(
            decoy, originals=self._rolled(scenario.images("test"))[index],
            labels={task: self._rolled(scenario.labels("test", task))[index] for task in decoy.labels})
        self.observed_metrics[cell.key], _ = score(output_from_plain(plain), sent, cell.attack.name,
                                                   cell.attack.instance.produces, observed)
        return metrics, artifacts


def check_no_decoy_match(cls: type, kwargs: dict, *, trust_plugins: bool = False) -> None:
    """An attack run against decoys scores no better against them than against what it observed."""
    runner = harness(harness_class=DecoyHarness, trust_plugins=trust_plugins)  # its encodings are its own
    decoys = run_cell(kwargs.pop("defense"), cls, runner=runner, **kwargs)
    if cls.produces == "class-statistic":
        return  # a statistic per probe class has no decoy to match
    (observed,) = runner.observed_metrics.values()
    assert decoys["privacy.score"] >= observed["privacy.score"] - 0.1, \
        f"{cls.name}: its output matches the harness's decoy test images (privacy.score " \
        f"{decoys['privacy.score']:.3f}) better than the images it observed " \
        f"({observed['privacy.score']:.3f}): it reads the harness's ground truth instead of its view"


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
    check_no_decoy_match(cls, {**kwargs, "defense": defense})
    return metrics
