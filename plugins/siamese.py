"""Defense ``siamese``: a split client fine-tuned with a contrastive (Siamese) loss on the service's
labels, so that what it sends keeps the class and loses the rest (Osia, Shamsabadi, Taheri, Rabiee,
Haddadi, "A Hybrid Deep Learning Architecture for Privacy-Preserving Mobile Analytics", IEEE
Internet of Things Journal 2020; arXiv 1703.02952).

Osia et al. fine-tune the pre-trained network in a Siamese architecture so that the features the
phone sends are close for images of the same (public-task) class and far apart otherwise; the
private detail of each image, which the service does not need, is squeezed out. Here the service's
trained target model is cut at ``layer`` into the client f1 and the server f2, and on each batch
of the owner's images

    client:  minimise  alpha * L_ct(f1(x), y)  +  (1 - alpha) * CE(y, f2(f1(x)))
    server:  minimise  CE(y, f2(f1(x)))

    L_ct = mean over pairs i != j of the batch of
           [y_i = y_j] d_ij  +  [y_i != y_j] max(0, m - d_ij),   d_ij = ||f1(x_i) - f1(x_j)||_2

(the contrastive loss of Hadsell, Chopra and LeCun, CVPR 2006, with the Euclidean distance between
flattened features and target-task labels y, in the form InferenceBenchmark's siamese_embedding
uses; Hadsell et al. square both terms, and which form the paper uses is not confirmed).
Pairs i = j are left out of the mean: they are always "same class" at distance 0, so they add
nothing but a batch-size-dependent factor n / (n - 1) on the loss (InferenceBenchmark's mean
includes them). The server's gradient is that of CE alone, whatever alpha, so alpha = 1 trains the
client on L_ct only while the server still learns the task.

The margin m must match the scale of the features, which nothing normalises (InferenceBenchmark:
m = 2 on its ResNet features; GLASS's port: m = 30 on CelebA). ``margin`` = 0 (default) sets m to
the median distance between two owner images' features under the service's own client before
fine-tuning, on up to 512 owner images: different-class pairs are then pushed at least as far apart
as a typical pair of the undefended service, and the scale follows the dataset, the architecture
and the layer (measured on digits at lenet relu2: 3.3 to 3.7 for trained clients, against 1.2 for
an untrained one, so a margin taken from a fresh network would be about three times too small). A positive ``margin`` is
used as it is.

Parameters: ``layer`` (split point, as ``split``), ``alpha`` (weight of L_ct in the client's loss;
InferenceBenchmark 0.005 with m = 2, GLASS 0.005 beside a CE of weight 1), ``margin`` (m; 0: the
median distance above), ``epochs`` (0: the scenario's ``target_epochs``), ``lr`` (Adam, amsgrad, as
privbench's target model), ``batch_size`` (pairs are formed within a batch). The default alpha 0.5
is not from the paper, which gives no setting for 8 x 8 digits: it is a measured middle ground on
digits (parity service, private digit, 15 epochs, attackers 15 epochs): alpha 0 / 0.5 / 0.9 / 1.0
give attribute-inference accuracy on the digit 0.98 / 0.80 / 0.52 / 0.47 (chance 0.10) at parity
accuracy 0.98 / 0.96 / 0.97 / 0.98 (unprotected 0.97), automatic margin 3.28. InferenceBenchmark's
alpha = 0.005 would leave the contrastive term next to nothing at this margin.

Threat model: a defense, no adversary during training; the server only needs class-discriminative
features. It claims black-box and query-free protection and gives the access facts of ``split``
(the client's weights exist on the user's device, so white-box cells show what a leaked client
costs). ``defense.siamese_margin`` reports the margin m used.
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
    hookimpl,
    param,
    resident,
    shuffled_epochs,
    split_model,
)

MARGIN_IMAGES = 512  # owner images whose pairwise feature distances set the automatic margin


def pairwise_distances(features: torch.Tensor) -> torch.Tensor:
    """d_ij = ||f_i - f_j||_2 of flattened rows; the square root of squared distances clamped away
    from 0, so the gradient stays finite when two rows coincide."""
    flat = features.flatten(1)
    squared = (flat.unsqueeze(1) - flat.unsqueeze(0)).pow(2).sum(-1)
    return squared.clamp_min(1e-12).sqrt()


def contrastive_loss(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """L_ct: mean over pairs i != j of [y_i = y_j] d_ij + [y_i != y_j] max(0, m - d_ij)."""
    distances = pairwise_distances(features)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    per_pair = torch.where(same, distances, (margin - distances).clamp_min(0))
    distinct = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return per_pair[distinct].mean() if distinct.any() else per_pair.sum() * 0


def median_distance(features: torch.Tensor) -> float:
    """The median of ||f_i - f_j||_2 over pairs i < j."""
    flat = features.flatten(1).double()
    upper = torch.triu_indices(len(flat), len(flat), 1)
    return float(torch.cdist(flat, flat)[upper[0], upper[1]].median())


class SiameseEncoder(SplitEncoder):
    """The fine-tuned client f1, carrying the margin it was trained with (a buffer, for evaluate)."""

    def __init__(self, client: nn.Module, margin: float = 0.0) -> None:
        super().__init__(client)
        self.register_buffer("margin", torch.tensor(float(margin)))


@dataclass
class Siamese(SplitFeatureDefense):
    """Fine-tune the split client with alpha * contrastive + (1 - alpha) * CE (Osia et al.)."""

    name: ClassVar[str] = "siamese"
    summary: ClassVar[str] = ("split inference with the client fine-tuned on alpha * contrastive "
                              "loss over target-task pairs + (1 - alpha) * CE (Osia et al., Siamese "
                              "embedding)")
    cost_hint: ClassVar[float] = 1.0  # fine-tunes the small target model once

    alpha: float = param(0.5, "alpha: weight of the contrastive loss in the client's loss, CE "
                              "weighted 1 - alpha (InferenceBenchmark: 0.005)", minimum=0.0, maximum=1.0)
    margin: float = param(0.0, "m: contrastive margin in feature units (0: the median pairwise "
                               "distance of the service's client features on owner images)",
                          minimum=0.0)
    epochs: int = param(0, "fine-tuning epochs (0: the scenario's target_epochs)", minimum=0)
    lr: float = param(1e-3, "Adam learning rate (amsgrad, as privbench's target model)", minimum=0.0)
    batch_size: int = param(32, "images per batch: the contrastive pairs are formed within it",
                            minimum=2)

    def build(self, facts) -> Protection:
        client, server = split_model(facts.service_classifier(), self.layer, facts.arch, owner=self.name)
        return Protection(encoder=SiameseEncoder(client), server=server)

    def fit(self, owner) -> Protection:
        client, server = split_model(owner.target_model(), self.layer, owner.facts.arch, owner=self.name)
        margin = self.margin or median_distance(apply(client, owner.images[:MARGIN_IMAGES], owner))
        self.fine_tune(client, server, owner, margin)
        encoder = SiameseEncoder(client.eval().cpu(), margin)
        return Protection(encoder=encoder, server=server.eval().cpu())

    def fine_tune(self, client: nn.Module, server: nn.Module, owner, margin: float) -> None:
        """Adam (amsgrad) for ``epochs`` epochs; per batch the client steps on
        alpha * L_ct + (1 - alpha) * CE and the server on CE."""
        device = owner.device
        client.to(device).train()
        server.to(device).train()
        client_parameters, server_parameters = list(client.parameters()), list(server.parameters())
        optimizer = adam(client_parameters + server_parameters, self.lr)
        images, labels = resident(device, owner.images, owner.labels())
        description = f"siamese: split at {self.layer}, alpha {self.alpha:g}, margin {margin:.3g}"
        for epoch in shuffled_epochs(owner, len(images), epochs=self.epochs or owner.facts.target_epochs,
                                     batch_size=self.batch_size, description=description, device=device):
            for index in epoch:
                x, y = images[index], labels[index]
                features = client(x)
                cross_entropy = nn.functional.cross_entropy(server(features), y)
                client_loss = ((1 - self.alpha) * cross_entropy
                               + self.alpha * contrastive_loss(features, y, margin))
                client_grads = torch.autograd.grad(client_loss, client_parameters, retain_graph=True)
                server_grads = torch.autograd.grad(cross_entropy, server_parameters)
                for parameter, grad in zip(client_parameters + server_parameters,
                                           client_grads + server_grads, strict=True):
                    parameter.grad = grad
                optimizer.step()

    def evaluate(self, protection, data) -> dict[str, float]:
        return {"defense.siamese_margin": float(protection.encoder.margin)}


@hookimpl
def register_defenses(register):
    register(Siamese)


@hookimpl
def register_metrics(register):
    register(MetricSpec("defense.siamese_margin", "feature units", "none", "margin m of the "
                        "contrastive loss the client was fine-tuned with",
                        "the margin parameter, or the median pairwise distance of the service's "
                        "client features on up to 512 owner images", 0, None))
