"""Attack ``unsplit``: model inversion and stealing with nothing but the client's architecture
(Erdogan, Kupcu, Cicek, "UnSplit: Data-Oblivious Model Inversion, Model Stealing, and Label
Inference Attacks Against Split Learning", WPES 2022, Sec. 4).

Threat model: query-free, and weaker than any other reconstruction attack here. The attacker (the
server of a split model) knows the client's architecture f1 and observes z = f1(x) of a victim
image; it has no client weights, no auxiliary data, no queries and no labels. It searches for the
image and the client weights together, by coordinate descent on

    min over x~, theta~ of  MSE(f1(x~; theta~), z) + lambda_TV * TV(x~) + lambda_l2 * mean(x~^2)

alternating ``input_steps`` Adam steps on x~ (the full objective) with ``model_steps`` Adam steps
on the clone's weights theta~ (the MSE term alone), ``iterations`` times. TV is the squared
neighbour differences, each direction averaged (their ``TV``). The authors' settings are the
defaults: Adam with amsgrad at lr 1e-3 for both, lambda_TV 0.1, lambda_l2 1, x~ starting at the
constant 0.5 and never clamped during the search, 100 + 100 inner steps. Their outer count is 1000
(2 x 10^5 steps per image); ``iterations`` defaults to 3 to keep the default matrix affordable (on
8 x 8 digits, measured on a loaded 2-core machine, 10 images at LeNet relu2 took 72 s for 5 outer
steps and 465 s for 20), and the count used is part of the cell's attack spec. The authors' code on
real MNIST at conv1 (ege-erdogan/unsplit @ 4d972bf, run unchanged but for a driver) reached SSIM 0.32 raw and 0.60 after
their min-max normalisation with 100 outer steps.

The estimate comes back at a fraction of the true brightness (lambda_l2 and the clone's free scale),
so by default (``rescale=minmax``) each reconstruction is stretched to [0, 1] by its own minimum and
maximum, the authors' ``normalize`` (used for their CIFAR scores): a step that reads nothing but the
attacker's own output. ``rescale=none`` returns the raw estimate, clipped to [0, 1] (their MNIST
score).

The clone is the view's ``build_encoder()``: a freshly initialised client of the defense's
architecture drawn from the attacker's own stream, never the defender's weights. Unlike the authors'
demo, which keeps one clone learning across its ten targets, every target gets a fresh clone, so each
reconstruction uses that target's observation alone. Random perturbation layers of the architecture
(feature noise or dropout) are left out of the clone: the attacker optimises the deterministic map.
The targets are searched side by side with the clones' weights stacked (``privbench.inversion.unsplit``,
exactly the one-at-a-time search). ``images`` test images are attacked, every class first (the
authors take the first test image of each class).

Returns the reconstructions (clipped to [0, 1]), which the harness scores like every reconstruction,
and each target's clone as a stolen client: where the defense gives the attacker the server (a split
model, whose server the attacker is), the harness runs every clone with the real server on the test
images in the defender's process and reports the mean accuracy as ``attack.clone_accuracy`` (the
authors' model-stealing measure; theirs is one clone trained across all targets, here each clone has
seen one target only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from privbench.api import Attack, AttackOutput, hookimpl, param, unsplit, without_random_layers


@dataclass
class UnSplit(Attack):
    """Invert an unknown client: optimise the image and a fresh clone of the client together."""

    name: ClassVar[str] = "unsplit"
    summary: ClassVar[str] = ("query-free, architecture only: coordinate descent on the image and a "
                              "fresh clone of the client's weights (Erdogan et al., UnSplit)")
    threat_model: ClassVar[str] = "query-free"
    requires: ClassVar[frozenset[str]] = frozenset({"architecture"})
    cost_hint: ClassVar[float] = 3

    iterations: int = param(3, "outer steps (authors: 1000; each is input_steps + model_steps Adam "
                               "steps)", minimum=1)
    input_steps: int = param(100, "Adam steps on the image per outer step (authors: 100)", minimum=1)
    model_steps: int = param(100, "Adam steps on the clone's weights per outer step (authors: 100)",
                             minimum=0)
    tv_weight: float = param(0.1, "lambda_TV, weight of the squared total variation (authors: 0.1)",
                             minimum=0.0)
    l2_weight: float = param(1.0, "lambda_l2, weight of mean(x^2) (authors: 1)", minimum=0.0)
    lr: float = param(1e-3, "Adam (amsgrad) learning rate for image and clone (authors: 1e-3)",
                      minimum=0.0)
    images: int = param(10, "test images to attack, every class first (authors: 10, one per class)",
                        minimum=1)
    rescale: str = param("minmax", "minmax: stretch each reconstruction to [0, 1] by its own minimum "
                                   "and maximum (the authors' normalize(), used for CIFAR); none: "
                                   "the raw estimate (their MNIST score)", choices=("minmax", "none"))

    def victims(self) -> int:
        return self.images

    def run(self, view) -> AttackOutput:
        clones = [without_random_layers(view.build_encoder()).eval() for _ in range(len(view.observed))]
        reconstructed = unsplit(
            clones, view.observed, tuple(view.image_shape), view, iterations=self.iterations,
            input_steps=self.input_steps, model_steps=self.model_steps, tv_weight=self.tv_weight,
            l2_weight=self.l2_weight, lr=self.lr,
            description=f"unsplit: {len(clones)} images x {self.iterations} outer steps")
        if self.rescale == "minmax":
            reconstructed = stretched(reconstructed)
        stolen = [{name: value.detach().cpu() for name, value in clone.state_dict().items()}
                  for clone in clones]
        return AttackOutput(reconstruction=reconstructed, stolen_clients=stolen)


def stretched(images):
    """Each image mapped linearly onto [0, 1] by its own minimum and maximum (a flat image becomes
    0, as the authors' ``normalize``): it uses nothing but the attacker's own output."""
    flat = images.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = (high - low).view(-1, *[1] * (images.dim() - 1))
    shifted = images - low.view_as(span)
    return (shifted / span.clamp_min(1e-12)).where(span > 0, shifted.new_zeros(()))


@hookimpl
def register_attacks(register):
    register(UnSplit)
