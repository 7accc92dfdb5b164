"""Defense ``pca``: the client sends only the top-k principal components of its features.

Dimensionality reduction as a privacy defense, in the line of Osia et al.'s hybrid mobile/cloud
analytics (arXiv 1703.02952; IEEE IoT-J 2020), which reduce the client's output with PCA before it
leaves the phone; InferenceBenchmark (Singh et al.'s split-inference benchmark) runs it as
"pca_embedding" without citing a source, so the attribution is not confirmed.

The service's trained target model is cut at ``layer`` (as ``split``): the client computes the
flattened features h = flatten(f1(x)) in R^D and sends their coordinates in the top-k principal
subspace,

    z = V_k^T (h - mu),    mu = mean of h over the owner's images,
    V_k = the k leading eigenvectors of the owner's feature covariance (1/n) sum (h - mu)(h - mu)^T,

taken from the SVD of the centred owner feature matrix (float64, ``torch.linalg.svd``; it holds
the n x D owner features in memory, which is small at lenet's layers but not at an early ResNet-18
layer of large images, where a later ``layer`` is the practical choice). The basis
and the mean are **fitted once**, on the owner's training images, and then frozen: every batch, in
training and at test time, is projected on the same axes. Each component's sign is fixed (its
largest-magnitude entry is positive), so the same data gives the same basis. InferenceBenchmark
instead recomputes ``torch.pca_lowrank`` on every batch (so the server sees coordinates whose signs
and rotation change from batch to batch, and a test image's code depends on the batch it came in)
and projects the *uncentred* features; neither is copied.

Server: the target model's own head f2 takes D features, not k, so it cannot read z; the server is
a fresh classifier of the service's kind for k-dimensional vectors (privbench's two-layer
perceptron, 256 hidden units, as ``DataFacts.service_classifier`` builds for vector inputs) trained
for ``target_epochs`` epochs on the owner's projections. (InferenceBenchmark's server is a linear
stack that its builder doubles into 10 outputs; not copied.) The client f1 is the service's trained
one, frozen: PCA needs fixed features to be fitted once.

Parameters:
  layer  the split point (lenet default ``relu2``, as ``split`` and ``nopeek``: D = 16 x 4 x 4 = 256
         on 8 x 8 digits, 1024 on 28 x 28 MNIST).
  k      principal components sent. InferenceBenchmark sends 10 of the 128 x 16 x 16 features of a
         ResNet-18's layer2, and 10 is the default here. Measured on digits (parity, 15
         epochs; inverse network, 15 epochs): k = 2 / 10 / 64 of 256 features keep 0.49 / 0.83 /
         0.97 of the variance, give inverse-network SSIM 0.71 / 0.87 / 0.89 and service accuracy
         0.95 / 0.97 / 0.98 (unprotected 0.97): on 8 x 8 digits the leading components carry most
         of the stroke shape, so only a very small k hides much. ``check_data`` refuses k above
         the feature dimension D; ``fit`` refuses k above the number of owner images.

Threat model: the projection is linear and the client is a network on the user's device, so every
access fact except image-like holds (white-box, query, architecture, server, known pairs); the
defense claims black-box and query-free protection (what the k coordinates cannot carry).
``defense.explained_variance``: the share of the test features' variance (about the owner mean)
that the k components keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench.api import (
    MetricSpec,
    PrivbenchError,
    Protection,
    SplitFeatureDefense,
    apply,
    feature_size,
    hookimpl,
    param,
    split_model,
    train_server_on_encoded,
)


def principal_basis(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, V_k): the mean of ``features`` (n x D) and its k leading principal axes as the columns
    of a D x k orthonormal matrix, from the SVD of the centred matrix in float64; each column's
    largest-magnitude entry is made positive, so the basis does not depend on the SVD's signs."""
    rows = features.flatten(1).double()
    mean = rows.mean(0)
    _, _, right = torch.linalg.svd(rows - mean, full_matrices=False)
    basis = right[:k].T  # D x k, columns by decreasing variance
    signs = torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
    return mean.float(), (basis * signs).float()


def random_basis(dimension: int, k: int) -> torch.Tensor:
    """A random D x k orthonormal matrix from torch's global (harness-seeded) state: an unfitted basis."""
    q, _ = torch.linalg.qr(torch.randn(dimension, k))
    return q


class PCAEncoder(nn.Module):
    """x -> V_k^T (flatten(f1(x)) - mu): the client's features on k fixed principal axes."""

    def __init__(self, client: nn.Module, mean: torch.Tensor, basis: torch.Tensor) -> None:
        super().__init__()
        self.client = client
        self.register_buffer("mean", mean)
        self.register_buffer("basis", basis)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h = flatten(f1(x)), the features before projection."""
        return self.client(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.features(x) - self.mean) @ self.basis


@dataclass
class PCA(SplitFeatureDefense):
    """Send the top-k principal components of the split client's features, basis fitted once."""

    name: ClassVar[str] = "pca"
    summary: ClassVar[str] = ("split inference sending k principal components of the client's "
                              "features (basis and mean fitted once on the owner's data); server "
                              "trained on the projections")
    cost_hint: ClassVar[float] = 1.0  # a frozen client, one SVD and a small perceptron

    layer: str = param("relu2", "last layer of the client whose features are projected (as split's)")
    k: int = param(10, "k: principal components sent (InferenceBenchmark: 10)", minimum=1)

    def feature_dimension(self, facts) -> int:
        """D, how many features the client computes at ``layer`` (a dry run of an untrained copy)."""
        client, _ = split_model(facts.service_classifier(), self.layer, facts.arch, owner=self.name)
        return feature_size(client, facts.image_shape)

    def check_data(self, facts) -> str | None:
        problem = super().check_data(facts)
        if problem:
            return problem
        dimension = self.feature_dimension(facts)
        if self.k > dimension:
            return (f"defense 'pca': k={self.k} components of {dimension} features at {self.layer}; "
                    f"accepted: k from 1 to {dimension}")
        return None

    def build(self, facts) -> Protection:
        """An untrained client and a random orthonormal basis (zero mean) of the right shapes."""
        client, _ = split_model(facts.service_classifier(), self.layer, facts.arch, owner=self.name)
        dimension = feature_size(client, facts.image_shape)
        encoder = PCAEncoder(client, torch.zeros(dimension), random_basis(dimension, self.k))
        return Protection(encoder=encoder, server=facts.service_classifier((self.k,)))

    def fit(self, owner) -> Protection:
        client, _ = split_model(owner.target_model(), self.layer, owner.facts.arch, owner=self.name)
        client.requires_grad_(False)
        features = apply(client, owner.images, owner).flatten(1)
        if self.k > min(features.shape):
            raise PrivbenchError(f"defense 'pca': k={self.k} components from {len(features)} owner "
                                 f"images of {features.shape[1]} features; accepted: k at most "
                                 f"{min(features.shape)}")
        mean, basis = principal_basis(features, self.k)
        encoder = PCAEncoder(client, mean, basis).to(owner.device).eval()
        server = train_server_on_encoded(owner, encoder, input_shape=(self.k,),
                                         description=f"pca: server on {self.k} components at {self.layer}")
        return Protection(encoder=encoder.cpu(), server=server.eval())

    def evaluate(self, protection, data) -> dict[str, float]:
        """``defense.explained_variance``: sum ||V_k^T (h - mu)||^2 / sum ||h - mu||^2 on the test set."""
        encoder = protection.encoder
        with torch.no_grad():
            centred = apply(encoder.client, data.images, data).flatten(1) - encoder.mean.cpu()
            kept = (centred @ encoder.basis.cpu()).pow(2).sum()
            total = centred.pow(2).sum()
        return {"defense.explained_variance": float(kept / total) if total > 0 else 1.0}


@hookimpl
def register_defenses(register):
    register(PCA)


@hookimpl
def register_metrics(register):
    register(MetricSpec("defense.explained_variance", "[0, 1]", "none", "share of the client "
                        "features' variance the k principal components keep",
                        "squared norm of the test features' projections over their squared distance "
                        "to the owner mean, on every test image", 0, 1))
