"""Defense ``nopeek``: split inference whose client is trained to decorrelate its output from its
input (Vepakomma, Gupta, Dubey, Raskar, "NoPeek: Information leakage reduction to share activations
in distributed deep learning", ICDMW 2020).

The client half f1 and the server half f2 of the service's model are trained together, from fresh
weights, on each batch of the owner's images with

    L = CE(y, f2(f1(x)))  +  alpha * DCOR(x, f1(x))                                          (eq. 3)

where DCOR is Szekely, Rizzo & Bakirov's (2007) sample distance correlation between the batch's
images and the batch's activations, each flattened to a vector:

    a_ij = ||x_i - x_j||_2,  A = a - row mean - column mean + grand mean  (double centring)
    dCov^2(X, Z) = mean_ij(A_ij B_ij),  dCor^2 = dCov^2(X, Z) / sqrt(dCov^2(X, X) dCov^2(Z, Z))

with *Euclidean* distances, as the paper defines it. (InferenceBenchmark, NoPeekNN and GLASS use
squared distances, which double-centre to -2 times the centred Gram matrix and give sqrt(RV), a
measure of linear dependence only; a co-author's Keras notebook takes the square root, as here.)
The loss is computed per batch, so it depends on the batch size (``batch_size``, default 32, the
PyTorch NoPeek code's).

Parameters: ``layer`` (the split point, as ``split``), ``alpha`` (the dCor weight; the NoPeek code
sweeps 0.05 ... 1.0 on MNIST with CE weight 1, InferenceBenchmark uses alpha = 0.8 with CE weighted
0.2), ``epochs`` (0: the scenario's ``target_epochs``), ``lr`` (Adam, amsgrad). The paper gives no
setting for 8 x 8 digits: these defaults train as privbench's target model does, and alpha = 0.3
keeps the service (measured on digits, target digit, 15 epochs, split relu2: alpha 0 / 0.3 / 1.0 give
dCor 0.93 / 0.84 / 0.59 and accuracy 0.95 / 0.96 / 0.46).

Threat model: the server sees only f1(x); NoPeek is a defence against reconstruction from the
activations (the NoPeek evaluation trains a black-box inversion network), so it claims black-box and
query-free. It gives the same access facts as ``split`` (its weights exist on the client, so a
white-box cell runs and shows what a leaked client costs). ``defense.dcor`` (registered here) is the
distance correlation between the test images and what the client sends, on up to 512 of them.
``distance_correlation`` itself lives in ``privbench.dependence`` (the harness also scores every
reconstruction with it, ``attack.dcor``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench.api import (
    MetricSpec,
    Protection,
    SplitEncoder,
    SplitFeatureDefense,
    adam,
    apply,
    distance_correlation,
    hookimpl,
    param,
    resident,
    shuffled_epochs,
    split_model,
)

DCOR_IMAGES = 512  # test images defense.dcor is measured on (the O(n^2) distance matrices)


class SplitPair(nn.Module):
    """f1 and f2 trained together: returns (logits, the activations f1 sends)."""

    def __init__(self, client: nn.Module, server: nn.Module) -> None:
        super().__init__()
        self.client = client
        self.server = server

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        activations = self.client(x)
        return self.server(activations), activations


@dataclass
class NoPeek(SplitFeatureDefense):
    """Train the split model with cross-entropy plus alpha times dCor(x, f1(x)) (Vepakomma et al.)."""

    name: ClassVar[str] = "nopeek"
    summary: ClassVar[str] = ("split inference with the client trained to lower the distance "
                              "correlation between its input and output: CE + alpha * dCor(x, f1(x)) "
                              "(Vepakomma et al., NoPeek)")

    alpha: float = param(0.3, "alpha: weight of dCor(x, f1(x)) beside the cross-entropy (NoPeek code: "
                              "0.05 ... 1.0 on MNIST)", minimum=0.0)
    epochs: int = param(0, "joint training epochs (0: the scenario's target_epochs)", minimum=0)
    lr: float = param(1e-3, "Adam learning rate (amsgrad, as privbench's target model)", minimum=0.0)
    batch_size: int = param(32, "images per batch: dCor is a per-batch statistic (NoPeek code: 32)",
                            minimum=4)

    def build(self, facts) -> Protection:
        client, server = split_model(facts.service_classifier(), self.layer, facts.arch)
        return Protection(encoder=SplitEncoder(client), server=server)

    def fit(self, owner) -> Protection:
        client, server = split_model(owner.facts.service_classifier(), self.layer, owner.facts.arch)
        pair = self.trained(SplitPair(client, server), owner)
        return Protection(encoder=SplitEncoder(pair.client).eval().cpu(), server=pair.server.eval().cpu())

    def trained(self, pair: SplitPair, owner) -> SplitPair:
        """Adam (amsgrad) on CE + alpha * dCor per batch (eq. 3), for ``epochs`` epochs."""
        device = owner.device
        pair.to(device).train()
        optimizer = adam(pair.parameters(), self.lr)
        images, labels = resident(device, owner.images, owner.labels())
        for epoch in shuffled_epochs(owner, len(images), epochs=self.epochs or owner.facts.target_epochs,
                                     batch_size=self.batch_size, device=device,
                                     description=f"nopeek: split at {self.layer}, alpha {self.alpha:g}"):
            for index in epoch:
                x, y = images[index], labels[index]
                logits, activations = pair(x)
                loss = nn.functional.cross_entropy(logits, y)
                if self.alpha:
                    loss = loss + self.alpha * distance_correlation(x, activations)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return pair.eval()

    def evaluate(self, protection, data) -> dict[str, float]:
        """``defense.dcor``: dCor between up to 512 test images and the activations sent for them."""
        images = data.images[:DCOR_IMAGES]
        with torch.no_grad():
            sent = apply(protection.encoder, images, data)
            return {"defense.dcor": float(distance_correlation(images, sent))}


@hookimpl
def register_defenses(register):
    register(NoPeek)


@hookimpl
def register_metrics(register):
    register(MetricSpec("defense.dcor", "[0, 1]", "lower", "distance correlation between the test "
                        "images and what the client sends (NoPeek's leakage measure)",
                        "Szekely's sample dCor with Euclidean distances on up to 512 flattened test "
                        "images and their encodings", 0, 1))
