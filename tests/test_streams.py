"""Independent random streams: the split, the service, the defender, the attacker, the evaluation,
the query answers; the run secret they (all but the attacker's) are derived from."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from privbench.context import RunContext
from privbench.datasets import Digits, make_scenario
from privbench.plugins import load_registry
from privbench.schedule import CellPlan
from privbench.store import Store
from privbench.streams import PARTIES, SECRET_PARTIES, Streams, seed_globals
from privbench.testing import FittedDefenses, attack_view, call_of, dataset_call, harness, run_cell

SECRET = 0x5EC2E7_0123456789ABCDEF_0123456789  # any fixed 128-bit-ish value
OTHER_SECRET = SECRET + 1


def state63(sequence: np.random.SeedSequence) -> int:
    return int(sequence.generate_state(1, dtype=np.uint64)[0]) >> 1


def test_the_parties_get_different_documented_seeds():
    streams = Streams.from_seed(0)
    seeds = [getattr(streams, party) for party in PARTIES]
    assert len(set(seeds)) == len(PARTIES)
    assert Streams.from_seed(0) == streams and Streams.from_seed(1) != streams
    # the documented derivation without a secret: SeedSequence(seed).spawn, 63 bits each, and the
    # five parties that predate the secret keep the children they had when there were five
    five = np.random.SeedSequence(0).spawn(5)
    for index, party in enumerate(("split", "service", "defender", "attacker", "evaluation")):
        assert getattr(streams, party) == state63(five[index])
    assert streams.query == state63(np.random.SeedSequence(0).spawn(6)[5])
    assert streams.secret_id == ""


def test_a_secret_changes_every_stream_but_the_attackers():
    public, secret, other = (Streams.from_seed(7), Streams.from_seed(7, SECRET),
                             Streams.from_seed(7, OTHER_SECRET))
    assert set(SECRET_PARTIES) == set(PARTIES) - {"attacker"}
    for party in SECRET_PARTIES:
        assert getattr(secret, party) != getattr(public, party), party
        assert getattr(secret, party) != getattr(other, party), party
    assert public.attacker == secret.attacker == other.attacker  # the seed alone, as before
    seeds = [getattr(secret, party) for party in PARTIES]
    assert len(set(seeds)) == len(PARTIES)
    assert Streams.from_seed(7, SECRET) == secret  # reproducible from (seed, secret)
    assert Streams.from_seed(8, SECRET).split != secret.split  # and still per seed
    # the documented derivation with a secret
    private = np.random.SeedSequence(SECRET, spawn_key=(7,)).spawn(len(PARTIES))
    for party in SECRET_PARTIES:
        assert getattr(secret, party) == state63(private[PARTIES.index(party)])


def test_the_secret_id_is_a_stable_fingerprint_not_the_secret():
    streams = Streams.from_seed(0, SECRET)
    assert streams.secret_id == Streams.from_seed(5, SECRET).secret_id  # per secret, not per seed
    assert streams.secret_id == hashlib.sha256(f"privbench-secret-id:{SECRET}".encode()).hexdigest()[:16]
    assert len(streams.secret_id) == 16 and streams.secret_id != Streams.from_seed(0, OTHER_SECRET).secret_id
    for text in (f"{SECRET}", f"{SECRET:x}"):
        assert text not in streams.secret_id and text not in repr(streams)
    assert not any(getattr(streams, f.name) == SECRET for f in dataclasses.fields(streams))
    for party in SECRET_PARTIES:  # the secret-derived seeds stay out of a logged Streams too
        assert str(getattr(streams, party)) not in repr(streams)
    with pytest.raises(ValueError):
        Streams.from_seed(0, -1)


def test_the_split_and_its_cache_key_follow_the_secret():
    source = Digits.from_params({"limit": 200})
    digits = source.load(RunContext())
    public, secret = make_scenario(source, digits, 0), make_scenario(source, digits, 0, secret=SECRET)
    again, other = (make_scenario(source, digits, 0, secret=SECRET),
                    make_scenario(source, digits, 0, secret=OTHER_SECRET))
    assert torch.equal(secret.test, again.test) and not torch.equal(secret.test, public.test)
    assert not torch.equal(secret.test, other.test)
    assert "secret_id" not in public.cache_config()  # keys without a secret are unchanged
    assert secret.cache_config()["secret_id"] == secret.streams.secret_id
    assert secret.cache_config() != other.cache_config()
    assert str(SECRET) not in repr(secret.cache_config())
    held = secret.with_held_out((1,))  # keeps the secret's streams and split
    assert held.streams == secret.streams and set(held.test.tolist()) == set(secret.test.tolist())


def test_a_store_keeps_one_run_secret(tmp_path):
    path = tmp_path / "s.db"
    first = Store(str(path))
    secret = first.run_secret()
    assert isinstance(secret, int) and secret.bit_length() > 64  # 128 random bits
    assert first.run_secret() == secret
    second = Store(str(path))  # opened again, e.g. by a later run or another process
    assert second.run_secret() == secret
    fresh = Store(str(tmp_path / "t.db"))
    assert fresh.run_secret() != secret
    for store in (first, second, fresh):
        store.close()


def test_concurrent_stores_on_a_fresh_file_agree_on_the_secret(tmp_path):
    import threading
    path = tmp_path / "race.db"
    stores = [Store(str(path)) for _ in range(6)]
    barrier, found = threading.Barrier(len(stores)), []

    def draw(store: Store) -> None:
        barrier.wait()
        found.append(store.run_secret())

    threads = [threading.Thread(target=draw, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == len(stores) and len(set(found)) == 1
    for store in stores:
        store.close()


def test_an_older_store_without_a_secret_gets_one_drawn_on_first_use(tmp_path):
    import sqlite3
    path = tmp_path / "old.db"
    Store(str(path)).close()
    with sqlite3.connect(path) as connection:  # as an older privbench left it
        connection.execute("drop table store_secrets")
    store = Store(str(path))
    secret = store.run_secret()
    assert Store(str(path)).run_secret() == secret
    with sqlite3.connect(path) as connection:  # the public schema_info holds the version only
        assert connection.execute("select key from schema_info").fetchall() == [("version",)]
    store.close()


def test_a_run_context_never_shows_its_secret():
    ctx = RunContext(secret=123456789)
    assert "123456789" not in repr(ctx) and "123456789" not in str(ctx)
    assert ctx.secret == 123456789 and RunContext().secret is None


def captured_shadow_start(defense: str, defense_params: dict | None = None):
    """The shadow attack's freshly built encoder and the harness's scenario, for one cell."""
    registry = load_registry()
    runner = harness()
    cell = CellPlan(dataset_call("digits"), call_of(registry.get("defense", defense).cls, defense_params),
                    call_of(registry.get("attack", "shadow").cls), 0)
    scenario = runner.scenario(cell.dataset, 0)
    view = attack_view(runner, cell, count=2)
    seed_globals(scenario.streams.attacker)
    return view.build_encoder(), scenario, cell


def first_weight(module: torch.nn.Module) -> torch.Tensor:
    return next(p for p in module.parameters()).detach().flatten()


@pytest.mark.slow
def test_the_shadow_encoder_does_not_start_from_the_target_models_weights():
    shadow, scenario, cell = captured_shadow_start("split", {"layer": "relu2"})
    seed_globals(scenario.streams.service)  # the target model's initial weights
    initial_target = cell.defense.instance.build(scenario.facts()).encoder
    assert not torch.equal(first_weight(shadow), first_weight(initial_target))
    assert first_weight(shadow).shape == first_weight(initial_target).shape  # same architecture


@pytest.mark.slow
def test_the_shadow_encoder_does_not_start_from_dapters_u_net():
    shadow, scenario, cell = captured_shadow_start("dapter", {"epochs": 1})
    seed_globals(scenario.streams.defender)  # the U-Net's initial weights
    initial_unet = cell.defense.instance.build(scenario.facts()).encoder
    assert not torch.equal(first_weight(shadow), first_weight(initial_unet))


@pytest.mark.slow
def test_the_attackers_key_is_not_the_defenders_key():
    shadow, scenario, cell = captured_shadow_start("disguised-nets")
    protection, _ = FittedDefenses(harness()).protection(scenario, cell.defense)
    assert not torch.equal(shadow.matrices, protection.encoder.matrices)


@pytest.mark.slow
def test_changing_only_the_attackers_stream_leaves_the_defense_bit_identical(monkeypatch):
    from privbench_plugins.inverse_network import InverseNetwork
    params = {"epochs": 3}
    original = Streams.from_seed

    def fit_and_attack(change_attacker: bool):
        def streams(seed, secret=None):
            found = original(seed, secret)
            return dataclasses.replace(found, attacker=found.attacker + 1 if change_attacker
                                       else found.attacker)
        monkeypatch.setattr(Streams, "from_seed", staticmethod(streams))
        from privbench.artifacts import ArtifactCache
        runner = harness(ArtifactCache(None))
        metrics = run_cell("noise", InverseNetwork, attack_params=params, runner=runner)
        noise = call_of(load_registry().get("defense", "noise").cls)
        protection, _ = FittedDefenses(runner).protection(runner.scenario(dataset_call("digits"), 0), noise)
        return metrics, protection

    base_metrics, base = fit_and_attack(False)
    other_metrics, other = fit_and_attack(True)
    for name in ("encoder", "server"):
        first, second = getattr(base, name).state_dict(), getattr(other, name).state_dict()
        assert all(torch.equal(first[key], second[key]) for key in first)
    assert base_metrics["utility.accuracy"] == other_metrics["utility.accuracy"]
    assert base_metrics["attack.ssim"] != other_metrics["attack.ssim"]  # the attacker drew anew
