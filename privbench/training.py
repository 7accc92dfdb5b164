"""Training loops shared by the target model, defenses and attacks.

Defaults follow He et al.'s code: Adam with amsgrad and eps 1e-3, learning rate 1e-3, batch 32.
Every loop reports its epochs to the run's progress display. ``ctx`` is any object with
``device``, ``progress`` and ``seed`` (an ``OwnerData``, an ``AttackView``, the harness's
``TrainingContext``): the batch order comes from a generator seeded from that party's stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

BATCH_SIZE = 32
EVAL_BATCH_SIZE = 512
# Evaluation batches on a GPU: large enough that a LeNet-sized pass is one launch per layer, not one
# per 512 images (evaluation mode: the batch size does not change an image's output).
CUDA_EVAL_BATCH_SIZE = 8192


@dataclass(frozen=True)
class TrainingContext:
    """What privbench's training helpers need from a party: device, progress and its stream."""

    device: torch.device
    progress: Any
    seed: int


def adam(parameters, lr: float = 1e-3) -> torch.optim.Optimizer:
    """He et al.'s optimiser: Adam, amsgrad, eps 1e-3."""
    return torch.optim.Adam(parameters, lr=lr, eps=1e-3, amsgrad=True)


def eval_batch_size(device: torch.device | str) -> int:
    """The batch of an evaluation pass: ``EVAL_BATCH_SIZE`` on the CPU, ``CUDA_EVAL_BATCH_SIZE`` on a
    GPU."""
    return CUDA_EVAL_BATCH_SIZE if torch.device(device).type == "cuda" else EVAL_BATCH_SIZE


def resident(device: torch.device | str, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` moved to ``device`` once, before a loop indexes them batch by batch: on a GPU the
    data then stays there instead of crossing from the host for every batch; on the CPU they are the
    same tensors (nothing is copied, so every CPU result is unchanged)."""
    return tuple(tensor.to(device) for tensor in tensors)


def batches(count: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
            device: torch.device | str | None = None):
    """Index tensors of consecutive batches of 0 .. count - 1, in a random order drawn from
    ``generator`` when ``shuffle`` (drawn on the CPU: the same order on every device). The indices
    are CPU tensors, which index a tensor ``resident`` on a GPU too, at the price of a copy to the
    GPU that waits for it at every batch; ``device`` moves the whole order there once instead, for a
    loop that indexes only tensors on that device (on the CPU it changes nothing)."""
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    if device is not None:
        order = order.to(device)
    for start in range(0, count, batch_size):
        yield order[start:start + batch_size]


def shuffled_epochs(ctx, count: int, *, epochs: int, batch_size: int, description: str,
                    device: torch.device | str | None = None):
    """The loop of every training in privbench: for each of ``epochs`` epochs, an iterator over
    shuffled batches of the indices 0 .. count - 1 (one generator, seeded from ``ctx.seed``, draws
    every epoch's order), with one progress step when the caller has consumed the epoch. The
    caller indexes tensors it made ``resident`` on its device before the loop; ``device`` as in
    ``batches``."""
    generator = torch.Generator().manual_seed(ctx.seed)
    with ctx.progress.task(description, total=epochs) as advance:
        for _ in range(epochs):
            yield batches(count, batch_size, True, generator, device)
            advance()


def fit(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: Callable,
        ctx, *, epochs: int, description: str, lr: float = 1e-3, batch_size: int = BATCH_SIZE,
        transform: Callable | None = None, halve_lr_every: int = 0) -> nn.Module:
    """Minimise ``loss_fn(model(transform(x)), y)`` over (inputs, targets) with Adam.

    ``transform`` (e.g. a frozen encoder or a noise draw) is applied to each batch on the fly, so a
    stochastic transform gives fresh randomness every epoch; a module ``transform`` moves to the device
    with ``model``. ``halve_lr_every`` > 0 halves the learning rate after every that many epochs (He et
    al.'s schedule).
    """
    device = ctx.device
    model.to(device).train()
    if isinstance(transform, nn.Module):
        transform.to(device)  # its state (e.g. a blur kernel) sits where the batches it encodes do
    inputs, targets = resident(device, inputs, targets)
    optimizer = adam(model.parameters(), lr)
    schedule = (torch.optim.lr_scheduler.StepLR(optimizer, halve_lr_every, gamma=0.5)
                if halve_lr_every > 0 else None)
    for epoch in shuffled_epochs(ctx, len(inputs), epochs=epochs, batch_size=batch_size,
                                 description=description, device=device):
        for index in epoch:  # on the device: it indexes only the resident pair
            x, y = inputs[index], targets[index]
            if transform is not None:
                with torch.no_grad():
                    x = transform(x)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        if schedule is not None:
            schedule.step()
    return model.eval()


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ctx, *,
                     epochs: int, description: str, **kwargs) -> nn.Module:
    """Train ``model`` with cross-entropy on (images, labels)."""
    return fit(model, images, labels, nn.functional.cross_entropy, ctx, epochs=epochs,
               description=description, **kwargs)


def train_server_on_encoded(owner, encoder: nn.Module, *, description: str,
                            input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A fresh classifier of the service's architecture trained for ``target_epochs`` on the owner's
    images as ``encoder`` sends them (drawn afresh every batch): the server of a defense whose
    service only ever sees protected data. ``owner`` is the defense's ``OwnerData``;
    ``input_shape``: the encoder's output shape when it differs from the image's (e.g. padded)."""
    facts = owner.facts
    server = train_classifier(facts.service_classifier(input_shape), owner.images, owner.labels(), owner,
                              epochs=facts.target_epochs,
                              transform=encoder, description=description)
    return server.cpu()


@torch.no_grad()
def apply(module: nn.Module, inputs: torch.Tensor, ctx, batch_size: int | None = None) -> torch.Tensor:
    """``module(inputs)`` in evaluation mode, batched (``eval_batch_size`` of the device unless
    given), on the run's device; the result on the CPU, moved back once."""
    module.to(ctx.device).eval()
    size = batch_size or eval_batch_size(ctx.device)
    outputs = [module(inputs[start:start + size].to(ctx.device)) for start in range(0, len(inputs), size)]
    return torch.cat(outputs).cpu()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread inside the block, then the count as before. For work whose
    steps are too small to share between threads, which then only wait on each other: on 2 cores
    shared with other jobs, Shredder's fit (32 x 120 batches) took 30 s wall for 3 samples of 30
    epochs with 2 threads and 4.5 s with 1, and a ResNet-18 reproduction 116 s against 24 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
