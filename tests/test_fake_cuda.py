"""The device checks a GPU would make, on a machine without one.

torch's ``FakeTensorMode`` (the tensors ``torch.compile`` traces with) makes tensors that say they
live on ``cuda`` without a GPU: an operation on them checks shapes, dtypes and devices as CUDA would
and computes nothing. Forward passes only (a fake backward pass needs a real CUDA context), so
these tests cover what a module holds and what a plugin builds beside a model; ``tests/test_cuda.py``
trains on a real GPU where there is one. The bugs they pin were found by reading the code for
``--device cuda``: blur's kernel stayed on the CPU while its server trained on GPU batches, and
shredder's and ``feature_size``'s dry runs fed a CPU image to a model on the GPU. The last tests
check what a GPU run draws: building a module from a seed reseeded every GPU's generator too.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from privbench.artifacts import ArtifactCache
from privbench.models import classifier, module_device
from privbench.progress import SilentProgress
from privbench.splitting import feature_size, split_model
from privbench.testing import call_of, dataset_call, harness
from privbench.training import TrainingContext, batches, fit

fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")


@pytest.fixture
def fake():
    """A fake mode in which real CPU tensors may still be mixed in (as a plugin's constants are)."""
    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)
    return fake_tensor.FakeTensorMode(allow_non_fake_inputs=True)


def on_fake_gpu(module: nn.Module, mode) -> nn.Module:
    """``module.to("cuda")`` in fake form: every parameter and buffer becomes a fake CUDA tensor."""
    for part in module.modules():
        for name, parameter in list(part._parameters.items()):
            if parameter is not None:
                part._parameters[name] = nn.Parameter(mode.from_tensor(parameter.detach()).to("cuda"),
                                                      requires_grad=parameter.requires_grad)
        for name, buffer in list(part._buffers.items()):
            if buffer is not None:
                part._buffers[name] = mode.from_tensor(buffer).to("cuda")
    return module


class CpuKernel(nn.Module):
    """A module that keeps its weights as a plain attribute: ``.to(device)`` leaves them behind."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = torch.ones(1, 1, 3, 3) / 9

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.kernel, padding=1)


def test_the_fake_gpu_rejects_a_cpu_weight_on_gpu_data(fake):
    with fake, pytest.raises(RuntimeError, match="device"):
        CpuKernel()(torch.zeros(2, 1, 8, 8, device="cuda"))


@pytest.fixture(scope="module")
def digits_facts(tmp_path_factory):
    runner = harness(ArtifactCache(tmp_path_factory.mktemp("fake-cuda")))
    scenario = runner.scenario(dataset_call("digits", {"target_epochs": 1}), 0)
    return scenario.facts(), scenario.images("test")[:4]


def test_every_defense_encodes_and_serves_on_a_gpu(registry, digits_facts, fake):
    facts, images = digits_facts
    for name in registry.names("defense"):
        protection = call_of(registry.get("defense", name).cls, {}).instance.build(facts)
        with fake:
            encoded = on_fake_gpu(protection.encoder, fake).eval()(fake.from_tensor(images).to("cuda"))
            logits = on_fake_gpu(protection.server, fake).eval()(encoded)
        assert encoded.device.type == logits.device.type == "cuda", name


@pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")  # split_model's deep copy
def test_shredder_measures_its_cut_on_a_target_model_on_the_gpu(registry, digits_facts, fake):
    facts, _ = digits_facts
    shredder = call_of(registry.get("defense", "shredder").cls, {}).instance
    _, _, cpu_shape = shredder.split(classifier(facts.arch, facts.image_shape, 10), facts)
    with fake:
        target = on_fake_gpu(classifier(facts.arch, facts.image_shape, 10), fake)
        _, _, shape = shredder.split(target, facts)
    assert shape == cpu_shape


@pytest.mark.parametrize("arch, shape", [("he-cifar", (3, 32, 32)), ("titcombe", (1, 28, 28))])
def test_feature_size_of_a_client_that_only_normalises(arch, shape, fake):
    client, _ = split_model(classifier(arch, shape, 10), "normalize", arch)
    assert not list(client.parameters()) and list(client.buffers())  # its state is a buffer
    with fake:
        on_fake_gpu(client, fake)
        assert module_device(client).type == "cuda"
        assert feature_size(client, shape) == shape[0] * shape[1] * shape[2]


def test_module_device_reads_parameters_then_buffers_then_defaults_to_the_cpu(fake):
    assert module_device(nn.ReLU()) == torch.device("cpu")
    with fake:
        assert module_device(on_fake_gpu(nn.Linear(2, 2), fake)).type == "cuda"
        normalise, _ = split_model(classifier("he-cifar", (3, 32, 32), 10), "normalize", "he-cifar")
        assert module_device(on_fake_gpu(normalise, fake)).type == "cuda"


class DeviceSpy(nn.Identity):
    """An identity transform that records where it was asked to move."""

    def __init__(self) -> None:
        super().__init__()
        self.moved_to: list[torch.device] = []

    def _apply(self, fn, recurse=True):
        probe = fn(torch.zeros(()))
        self.moved_to.append(probe.device)
        return super()._apply(fn, recurse)


def test_fit_moves_a_module_transform_with_the_model(digits_facts):
    _, images = digits_facts
    spy = DeviceSpy()
    ctx = TrainingContext(torch.device("cpu"), SilentProgress(), 0)
    fit(nn.Sequential(nn.Flatten(), nn.Linear(images[0].numel(), 2)), images, torch.tensor([0, 1, 0, 1]),
        nn.functional.cross_entropy, ctx, epochs=1, description="spy", transform=spy)
    assert spy.moved_to == [torch.device("cpu")]


def test_an_epoch_order_moves_to_the_device_once_and_keeps_its_batches(fake):
    generator = torch.Generator().manual_seed(3)
    on_cpu = list(batches(10, 4, True, torch.Generator().manual_seed(3)))
    with fake:
        on_gpu = list(batches(10, 4, True, generator, device="cuda"))
    assert [index.device.type for index in on_gpu] == ["cuda"] * 3
    assert [len(index) for index in on_gpu] == [len(index) for index in on_cpu] == [4, 4, 2]
    same_device = list(batches(10, 4, True, torch.Generator().manual_seed(3), device="cpu"))
    assert all(torch.equal(a, b) for a, b in zip(same_device, on_cpu, strict=True))


def test_building_a_module_from_a_seed_leaves_every_gpu_stream_alone(registry, digits_facts, monkeypatch):
    """``torch.manual_seed`` would also reseed each GPU's generator, so an attack's later draws on
    the GPU would restart from the build's seed; module building draws on the CPU only."""
    from privbench.image_prior import fresh_generator
    from privbench.parties.roles import rebuilt
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    facts, images = digits_facts
    identity = call_of(registry.get("defense", "identity").cls, {}).instance
    rebuilt(identity, facts, torch.device("cpu"), seed=5)
    fresh_generator(tuple(images.shape[1:]), 5, levels=1, width=4)
    torch.manual_seed(0)  # the control: this one does reseed them
    assert reseeded == [0]


def test_a_trusted_party_restores_the_generator_of_the_gpu_it_draws_from():
    from privbench.parties.host import gpu_indices
    assert gpu_indices(torch.device("cpu")) == []
    assert gpu_indices(torch.device("cuda:1")) == [1]
