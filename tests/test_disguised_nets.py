"""Disguised-Nets (Sharma & Chen): the keyed block transform's maths, its key, and its utility."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from privbench.api import ACCESS, Attack, DataFacts, PrivbenchError, accuracy, apply
from privbench.params import parse_spec
from privbench.schedule import CellPlan
from privbench.streams import seed_globals
from privbench.testing import (
    attack_view,
    call_of,
    check_defense,
    dataset_call,
    fresh_artifacts,
    harness,
    run_cell,
)
from privbench_plugins.attribute_inference import AttributeInference
from privbench_plugins.disguised_nets import DisguisedNets, DisguiseEncoder, block_pixel_index
from privbench_plugins.known_plaintext import KnownPlaintext

DIGIT_SHAPE = (1, 8, 8)
# Every digit; the server trains from scratch on disguised images for target_epochs, and after 25
# epochs it stays within 0.04 of the target model (seeds 0-2: 0.950-0.978 vs 0.986; at 15 epochs
# seed 0 reaches only 0.931 vs 0.983, even 1x1 blocks lose 0.02-0.03 there).
DIGITS = {"limit": 0, "target_epochs": 25}


def facts_of(shape) -> DataFacts:
    """Public facts of a made-up two-class dataset of ``shape`` images."""
    return DataFacts("synthetic", tuple(shape), {"class": 2}, "class", "class", "lenet", 1)


def blocks_of(images: torch.Tensor, encoder: DisguiseEncoder, width: int | None = None) -> torch.Tensor:
    """N x C x t x m x w (w = ``width`` or m): the blocks of padded-size (or, with ``width``,
    disguised-size) images, numbered row by row."""
    index = block_pixel_index(encoder.grid, encoder.block, width)
    return images.flatten(2)[:, :, index]


def encoder(seed: int = 0, shape=DIGIT_SHAPE, **params) -> DisguiseEncoder:
    """The disguise ``build`` draws when the harness has seeded torch's global state with ``seed``."""
    torch.manual_seed(seed)
    return DisguisedNets(**params).build(facts_of(shape)).encoder


@pytest.mark.parametrize("permute", [False, True])
def test_orthogonal_rmt_keeps_every_block_norm_and_moves_blocks_by_the_permutation(permute):
    enc = encoder(permute=permute, noise=0.0, block=2, shape=(1, 12, 12))
    x = torch.rand(16, 1, 12, 12)
    z = enc(x)
    plain, disguised = blocks_of(x, enc), blocks_of(z, enc)
    source_norms = plain.flatten(3).norm(dim=-1)[:, :, enc.permutation]
    torch.testing.assert_close(disguised.flatten(3).norm(dim=-1), source_norms, atol=1e-5, rtol=1e-5)
    # the blocks themselves changed: R_i mixes the columns, it is not the identity
    assert (disguised - plain[:, :, enc.permutation]).abs().max() > 0.05
    assert permute == (not torch.equal(enc.permutation, torch.arange(len(enc.permutation))))


def test_orthogonal_matrices_are_haar_random_orthogonal_with_both_determinant_signs():
    matrices = encoder(block=4, shape=(1, 32, 32)).matrices.double()
    eye = torch.eye(4, dtype=torch.float64).expand_as(matrices)
    torch.testing.assert_close(matrices @ matrices.transpose(1, 2), eye, atol=1e-6, rtol=0)
    signs = torch.linalg.det(matrices).sign()
    assert (signs > 0).any() and (signs < 0).any()  # O(m), not only rotations
    assert abs(float(matrices.mean())) < 0.1


def test_the_permutation_is_a_bijection_of_block_positions():
    enc = encoder(shape=(1, 28, 28), block=7)
    assert enc.grid == (4, 4)
    assert sorted(enc.permutation.tolist()) == list(range(16))
    assert not torch.equal(enc.permutation, torch.arange(16))


def test_permutation_only_moves_every_block_unchanged():
    enc = encoder(matrix="none", noise=0.0, block=2, shape=(1, 12, 12))
    x = torch.rand(16, 1, 12, 12)
    z = enc(x)
    assert not torch.equal(z, x)  # the blocks moved ...
    torch.testing.assert_close(blocks_of(z, enc), blocks_of(x, enc)[:, :, enc.permutation], atol=0, rtol=0)
    # ... but every image keeps exactly its pixels: the content is only rearranged (a jigsaw)
    assert torch.equal(z.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    torch.testing.assert_close(enc.invert(z), x, atol=0, rtol=0)


def test_permutation_only_with_noise_adds_only_the_noise_to_the_moved_blocks():
    enc = encoder(matrix="none", noise=50.0, block=2, shape=(1, 12, 12))
    x = torch.rand(16, 1, 12, 12)
    delta = blocks_of(enc(x), enc) - blocks_of(x, enc)[:, :, enc.permutation]
    assert float(delta.min()) > -1e-6 and float(delta.max()) < 50 / 255 + 1e-6
    assert float(delta.max()) > 0.9 * 50 / 255


@pytest.mark.parametrize("matrix", ["projection", "gaussian-projection"])
def test_a_dimension_reducing_projection_keeps_m_times_out_dim_values_per_block(matrix):
    enc = encoder(matrix=matrix, out_dim=2, noise=0.0, block=4, shape=(1, 12, 12))
    x = torch.rand(8, 1, 12, 12)
    z = enc(x)
    assert enc.matrices.shape == (9, 4, 2) and enc.output_shape == (1, 12, 6) == tuple(z.shape[1:])
    # output block p is X_{pi(p)} R_{pi(p)}: each m x m block becomes m x d
    expected = blocks_of(x, enc)[:, :, enc.permutation] @ enc.matrices[enc.permutation]
    torch.testing.assert_close(blocks_of(z, enc, width=2), expected, atol=1e-5, rtol=1e-5)
    assert bool((torch.linalg.matrix_rank(enc.matrices.double()) == 2).all())
    assert float(torch.linalg.cond(enc.matrices.double()).max()) < 1e3


def test_the_key_can_no_longer_undo_a_dimension_reducing_projection():
    x = torch.rand(32, 1, 12, 12)
    errors = {}
    for out_dim in (1, 2, 3, 4):
        enc = encoder(matrix="gaussian-projection", out_dim=out_dim, noise=0.0, block=4, shape=(1, 12, 12))
        errors[out_dim] = float((enc.invert(enc(x)) - x).pow(2).mean())
    assert errors[4] < 1e-8, errors  # square: exact
    assert errors[1] > errors[2] > errors[3] > 1e-3, errors  # pseudo-inverse: the dropped part is lost


def test_known_plaintext_recovers_less_through_a_dimension_reducing_projection():
    attack = {"pairs": 200, "mode": "global"}  # one linear map from the whole disguise to pixels
    square = {"matrix": "gaussian-projection", "noise": 0.0}
    broken = run_cell(DisguisedNets, KnownPlaintext, defense_params=square, attack_params=attack)
    reduced = run_cell(DisguisedNets, KnownPlaintext, attack_params=attack,
                       defense_params={**square, "out_dim": 1})
    # observed (seed 0, 400 digits): square 97.2 dB, privacy 0.002; out_dim=1 18.9 dB, privacy 0.16
    assert broken["attack.psnr"] > 30 and broken["privacy.score"] < 0.05, broken
    assert reduced["attack.psnr"] < broken["attack.psnr"] - 20, reduced
    assert reduced["privacy.score"] > broken["privacy.score"] + 0.1, reduced


@pytest.mark.parametrize("spec, accepted", [
    ("disguised-nets:matrix=projection,block=2,out_dim=3", "accepted: 0 (d = m) or 1 to 2"),
    ("disguised-nets:matrix=orthogonal,block=4,out_dim=2", "accepted: out_dim=0 or 4"),
    ("disguised-nets:matrix=none,out_dim=1", "needs a projection matrix, not matrix=none"),
])
def test_an_out_dim_the_matrix_or_block_cannot_have_is_refused_in_one_line(spec, accepted):
    _, raw = parse_spec(spec)
    with pytest.raises(PrivbenchError) as refused:
        DisguisedNets.from_params(raw)
    message = refused.value.format_message()
    assert "\n" not in message and f"out_dim={raw['out_dim']}" in message and accepted in message
    square = {**raw, "out_dim": raw.get("block", "2")}
    assert DisguisedNets.from_params(square).out_dim == int(square["out_dim"])  # d = m is fine


def test_same_global_seed_gives_the_same_key_and_another_seed_another_key():
    first, again, other = encoder(seed=3), encoder(seed=3), encoder(seed=4)
    assert torch.equal(first.matrices, again.matrices)
    assert torch.equal(first.permutation, again.permutation)
    assert not torch.allclose(first.matrices, other.matrices)


def test_an_explicit_key_seed_leaves_the_global_rng_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    DisguiseEncoder((3, 32, 32), 2, "projection", True, 25.0, "before", key_seed=5)
    assert torch.equal(torch.rand(3), expected)
    first = DisguiseEncoder(DIGIT_SHAPE, 2, "orthogonal", True, 25.0, "before", key_seed=5)
    again = DisguiseEncoder(DIGIT_SHAPE, 2, "orthogonal", True, 25.0, "before", key_seed=5)
    assert torch.equal(first.matrices, again.matrices)  # the key is a function of key_seed alone


@dataclass
class FreshDisguise(Attack):
    """A do-nothing attack that asks for the defense's architecture (a freshly keyed encoder)."""

    name: ClassVar[str] = "fresh-disguise"
    summary: ClassVar[str] = "asks its view for a freshly keyed encoder"
    threat_model: ClassVar[str] = "query-free"
    requires: ClassVar[frozenset[str]] = frozenset({"architecture"})


@pytest.fixture(scope="module")
def tiny_runner(shared_cache):
    return harness(shared_cache)


def test_the_fitted_key_comes_from_the_defender_stream_and_the_attacker_draws_another(tiny_runner):
    defense, data = call_of(DisguisedNets), dataset_call("digits")
    scenario = tiny_runner.scenario(data, 0)
    fitted = fresh_artifacts().protection(scenario, defense)[0].encoder
    refitted = fresh_artifacts().protection(scenario, defense)[0].encoder
    other_seed = fresh_artifacts().protection(tiny_runner.scenario(data, 1), defense)[0].encoder
    assert torch.equal(fitted.matrices, refitted.matrices)
    assert torch.equal(fitted.permutation, refitted.permutation)
    assert not torch.allclose(fitted.matrices, other_seed.matrices)
    seed_globals(scenario.streams.defender)
    from_stream = DisguisedNets().build(scenario.facts()).encoder
    assert torch.equal(fitted.matrices, from_stream.matrices)  # the key is the defender stream's

    # an attacker with architecture access builds the same family, keyed from its own stream
    cell = CellPlan(data, defense, call_of(FreshDisguise), 0)
    observed = torch.zeros(1, *fitted.padded_shape)

    def attackers_key() -> DisguiseEncoder:
        view = attack_view(tiny_runner, cell, observed)
        return view.build_encoder()

    guess, again = attackers_key(), attackers_key()
    assert torch.equal(guess.matrices, again.matrices)  # the attacker's stream, reproducible
    assert not torch.allclose(guess.matrices, fitted.matrices)
    assert not torch.equal(guess.permutation, fitted.permutation)


@pytest.mark.parametrize("matrix", ["projection", "gaussian-projection"])
def test_projection_matrices_are_full_rank_and_invertible(matrix):
    enc = encoder(matrix=matrix, noise=0.0, block=4, shape=(1, 28, 28))
    assert bool((torch.linalg.matrix_rank(enc.matrices.double()) == 4).all())
    if matrix == "projection":  # the 2019 code's U[0, 1) entries
        assert float(enc.matrices.min()) >= 0 and float(enc.matrices.max()) < 1
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(enc.invert(enc(x)), x, atol=1e-4, rtol=1e-4)


def test_noise_before_the_multiplication_is_uniform_in_the_plain_domain():
    enc = encoder(noise=50.0, noise_placement="before")
    x = torch.rand(64, *DIGIT_SHAPE)
    z = enc(x)
    delta = enc.invert(z) - x  # (X + Delta) R  ->  X + Delta
    assert float(delta.min()) > -1e-5 and float(delta.max()) < 50 / 255 + 1e-5
    assert float(delta.max()) > 0.9 * 50 / 255
    # in the disguised domain the noise is Delta R: mixed by R, so it has negative entries
    assert float((z - enc.keyed_map(x)).min()) < -0.02


def test_noise_after_the_multiplication_is_uniform_in_the_disguised_domain():
    enc = encoder(noise=50.0, noise_placement="after")
    x = torch.rand(64, *DIGIT_SHAPE)
    z = enc(x)
    delta = z - enc.keyed_map(x)  # T(X) + Delta
    assert float(delta.min()) > -1e-5 and float(delta.max()) < 50 / 255 + 1e-5
    assert float(delta.max()) > 0.9 * 50 / 255
    assert float((enc.invert(z) - x).min()) < -0.02  # T^-1(Delta) leaves [0, N]


def test_noise_is_drawn_afresh_for_every_image():
    enc = encoder(noise=25.0)
    x = torch.rand(1, *DIGIT_SHAPE).expand(2, *DIGIT_SHAPE)
    z = enc(x)
    assert not torch.allclose(z[0], z[1])
    torch.testing.assert_close(enc.keyed_map(x)[0], enc.keyed_map(x)[1])


@pytest.mark.parametrize("shape", [(1, 25, 25), (3, 25, 25), (3, 32, 32)])
def test_padding_to_a_multiple_of_the_block_and_colour_channels(shape):
    enc = encoder(shape=shape, noise=0.0)
    x = torch.rand(5, *shape)
    z = enc(x)
    side = -(-shape[1] // 2) * 2
    assert enc.padded_shape == enc.output_shape == (shape[0], side, side)
    assert z.shape == (5, shape[0], side, side)
    torch.testing.assert_close(enc.invert(z), x, atol=1e-5, rtol=1e-5)
    # the same key for every channel: each channel is disguised as if it were a grey image
    grey = DisguiseEncoder((1, *shape[1:]), 2, "orthogonal", True, 0.0, "before", 0)
    grey.load_state_dict(enc.state_dict())
    for channel in range(shape[0]):
        torch.testing.assert_close(z[:, channel:channel + 1], grey(x[:, channel:channel + 1]))


def test_padding_on_a_25x25_image_disguises_the_zero_padding_too():
    enc = encoder(shape=(1, 25, 25), noise=25.0, permute=False)
    z = enc(torch.zeros(2, 1, 25, 25))
    assert float(z[:, :, 24:, :].abs().max()) > 0  # noise enters the padded row, then R mixes it


@pytest.mark.parametrize("params, output_shape", [
    ({}, (1, 26, 26)), ({"matrix": "projection", "out_dim": 1}, (1, 26, 13)),
    ({"matrix": "gaussian-projection", "block": 5, "out_dim": 3}, (1, 25, 15))])
def test_the_server_reads_the_padded_or_reshaped_disguise(params, output_shape):
    protection = DisguisedNets(**params).build(facts_of((1, 25, 25)))
    with torch.no_grad():
        z = protection.encoder(torch.rand(3, 1, 25, 25))
        logits = protection.server(z)
    assert protection.encoder.output_shape == output_shape == tuple(z.shape[1:])
    assert logits.shape == (3, 2)


def test_the_server_still_learns_digits_through_a_dimension_reducing_projection():
    data = dataset_call("digits", {"target": "digit", "limit": 0, "target_epochs": 5})
    scenario = harness().scenario(data, 0)
    defense = call_of(DisguisedNets, {"matrix": "projection", "out_dim": 1})
    protection = fresh_artifacts().protection(scenario, defense)[0]
    test = scenario.images("test")
    logits = apply(protection.server, apply(protection.encoder, test, harness().ctx), harness().ctx)
    # observed (seed 0, 5 epochs): 0.41 with 2 x 1 blocks vs 0.62 square; chance is 0.1
    assert protection.encoder.output_shape == (1, 8, 4)
    assert accuracy(logits, scenario.labels("test")) > 0.25


def test_the_encoder_is_differentiable_for_a_white_box_attacker():
    enc = encoder(noise=25.0, matrix="projection").double()
    x = torch.rand(2, *DIGIT_SHAPE, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda image: enc.keyed_map(image), (x,))
    enc(x).pow(2).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_the_encoder_is_vectorised():
    enc = encoder(shape=(1, 28, 28))
    x = torch.rand(256, 1, 28, 28)
    enc(x)
    started = time.perf_counter()
    for _ in range(5):
        enc(x)
    ms_per_image = 1000 * (time.perf_counter() - started) / (5 * 256)
    assert ms_per_image < 0.5  # target 0.05 ms; a Python loop over blocks would take far longer


def test_the_defense_gives_every_access_fact():
    assert DisguisedNets().access() == frozenset(ACCESS)
    assert {"query", "white-box", "architecture", "server", "image-like", "known-pairs"} <= \
        DisguisedNets().access()


def test_a_block_larger_than_the_image_is_refused_by_check_data_in_one_line(tiny_runner):
    name, raw = parse_spec("disguised-nets:block=100")
    defense = DisguisedNets.from_params(raw)  # a valid parameter on its own (minimum 1)
    facts = tiny_runner.scenario(dataset_call("digits"), 0).facts()
    problem = defense.check_data(facts)
    assert name == DisguisedNets.name and problem is not None
    assert "\n" not in problem
    assert "block=100" in problem and "8 x 8" in problem and "accepted: 1 to 8" in problem
    assert DisguisedNets.from_params({"block": 8}).check_data(facts) is None
    assert DisguisedNets.from_params({"block": 25}).check_data(facts_of((3, 25, 32))) is None


def test_the_harness_refuses_a_block_larger_than_the_image_before_training(monkeypatch):
    def no_training(self, owner):
        raise AssertionError("disguised-nets was fitted although check_data refused the dataset")

    monkeypatch.setattr(DisguisedNets, "fit", no_training)
    with pytest.raises(AssertionError, match="block=100 is larger than the images") as refused:
        run_cell(DisguisedNets, AttributeInference, defense_params={"block": 100},
                 attack_params={"epochs": 1})
    assert "was fitted" not in str(refused.value) and "\n" not in str(refused.value)


def test_disguised_nets_keeps_the_defense_contract():
    check_defense(DisguisedNets, {"block": 2, "noise": 25.0})


@pytest.mark.slow
def test_orthogonal_2x2_blocks_without_noise_keep_the_utility(shared_cache):
    runner = harness(shared_cache)
    scenario = runner.scenario(dataset_call("digits", DIGITS), 0)
    metrics = runner.utility(scenario, call_of(DisguisedNets, {"block": 2, "noise": 0.0,
                                                               "permute": False}))
    assert metrics["utility.baseline_accuracy"] > 0.85
    assert metrics["utility.accuracy"] >= metrics["utility.baseline_accuracy"] - 0.05
