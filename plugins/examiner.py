"""Attack ``examiner``: visual re-identification by a DNN examiner (Sharma & Chen, Disguised-Nets,
Sec. 4.1) and DAPter's auto-recognition attack (Wu et al., WWW 2021).

Threat model: query-free. The attacker holds protected test images (it is the untrusted party)
and its own raw auxiliary images with labels; it has neither the key nor queries. It trains a
classifier on its *raw* images (the "DNN examiner"; a shared artifact, trained once per dataset,
task, seed and architecture) and lets it label the protected images directly. It needs protected
data that is image-shaped (``image-like``).

Protected images with the input's channels but another height or width (Disguised-Nets pads the
image to a multiple of its block side; a dimension-reducing projection narrows every block) are
*resized* to the input's size (bilinear, antialiased) before the examiner reads them, as a
re-identifying eye would look at them. Resizing rather than cropping: cropping a padded disguise
would cut off the last row and column of (permuted, mixed) blocks, content the examiner could use,
and cannot enlarge a narrower one. The price: an image that was only padded comes back slightly
blurred and shifted where cropping would return it exactly (400 of the 8 x 8 digits padded to
9 x 9, 30 examiner epochs, seed 0: digit accuracy 0.49, against 0.74 unpadded). Another channel count is
refused: that is no image of the input's kind.

The examiner labels the protected images for two tasks in one cell, and the harness scores both:
- the private task (DAPter's case 1, a task other than the service's): ``attack.accuracy``,
  ``attack.chance`` (always answering the attacker's majority aux class), ``attack.p_value``, and
  privacy.score = clip((1 - accuracy) / (1 - chance), 0, 1): what must stay private;
- the scenario's target task, when it differs: ``attack.target_accuracy`` and
  ``attack.visual_privacy`` = 1 - that accuracy (Sharma & Chen's visual privacy, where target and
  private task are the same; DAPter's case 2, a task correlated with the service's). A defense
  that keeps the service's task readable is not punished in privacy.score for doing its job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from privbench.api import (
    Attack,
    AttackOutput,
    apply,
    hookimpl,
    param,
)


def as_input_images(observed: torch.Tensor, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """The protected images at the input's height and width: resized (bilinear, antialiased) when
    only those differ; a different channel count or a non-image is refused in one line."""
    channels, height, width = image_shape
    if observed.dim() != 4 or observed.shape[1] != channels:
        raise ValueError(f"the protected images have shape {tuple(observed.shape[1:])}, not "
                         f"{channels} channel(s) like the input's {tuple(image_shape)}: the examiner "
                         "reads only images with the input's channels")
    if tuple(observed.shape[2:]) == (height, width):
        return observed
    return F.interpolate(observed.float(), size=(height, width), mode="bilinear",
                         align_corners=False, antialias=True)


@dataclass
class Examiner(Attack):
    """A classifier trained on raw images labels the protected test images."""

    name: ClassVar[str] = "examiner"
    summary: ClassVar[str] = ("query-free: a classifier trained on raw images labels the protected "
                              "images (Disguised-Nets examiner, DAPter auto-recognition)")
    threat_model: ClassVar[str] = "query-free"
    requires: ClassVar[frozenset[str]] = frozenset({"image-like"})
    produces: ClassVar[str] = "labels"
    cost_hint: ClassVar[float] = 1  # relative run time, for parallel scheduling

    epochs: int = param(30, "examiner training epochs on the raw aux images", minimum=1)

    def run(self, view) -> AttackOutput:
        images = as_input_images(view.observed, tuple(view.image_shape))
        tasks = dict.fromkeys([view.private_task, view.target_task])
        return AttackOutput(predictions={task: self._examine(view, task, images) for task in tasks})

    def _examine(self, view, task: str, images: torch.Tensor):
        """Label the protected images (at the input's size) with the raw-image examiner for ``task``."""
        examiner = view.raw_classifier(task, self.epochs)
        return apply(examiner, images, view).argmax(1)


@hookimpl
def register_attacks(register):
    register(Examiner)
