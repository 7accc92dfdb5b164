"""The public surface for plugin authors: everything a defense, attack, dataset or metric needs.

A plugin imports from here and nowhere else in privbench; these names keep their meaning across
releases. ``privbench.testing`` is the conformance kit that checks a plugin against the contracts
below.

Contracts, in short (the README's "Writing a plugin" section has the whole story):

- **Defense**: a dataclass subclass with ``name``, ``summary``, ``gives`` (the ``ACCESS`` facts an
  attacker may have) and parameters declared with ``param``. ``build(facts)`` returns a
  ``Protection`` of untrained modules (drawing any key or weights from torch's global random state,
  which the harness seeds); ``fit(owner)`` returns the fitted ``Protection`` from the owner's data
  only. Both modules are stored as state dicts and rebuilt through ``build``, so every tensor that
  matters must be a parameter or a registered buffer. Never seed the global generators; use
  ``owner.generator`` or the state the harness seeded.
- **Attack**: a dataclass subclass with ``name``, ``summary``, ``threat_model``, ``requires`` and
  ``produces``; ``run(view)`` sees only its ``AttackView`` and returns an ``AttackOutput`` whose
  ``produces`` field the harness scores. Reading anything the view does not grant raises
  ``AccessDenied``; a defense that turns out not to fit raises ``NotApplicable``.
- **Dataset**: a ``DatasetSource`` subclass with ``tasks``, ``default_target``,
  ``default_private`` and ``load_raw(ctx)`` returning a ``Dataset``; every parameter is part of
  the cache key.
- **Metric**: every ``attack.*`` diagnostic or ``defense.*`` fact a plugin reports is declared
  with a ``MetricSpec`` from its ``register_metrics`` hook.
- Hooks: ``register_datasets``, ``register_defenses``, ``register_attacks``, ``register_metrics``,
  each taking ``register``; mark them with ``hookimpl``.

The same code gives the same numbers under every executor when a plugin draws its randomness only
from the streams the harness seeded (``owner.generator``, ``view.generator`` or the global state)
and keeps no state between calls.
"""

from __future__ import annotations

from privbench.core import ACCESS, THREAT_MODELS, Artifact, Attack, AttackOutput, Defense, Protection
from privbench.datasets import Dataset, DatasetSource, LabelTask, digit_task_labels
from privbench.dependence import blockwise, distance_correlation, rv_distance_correlation
from privbench.errors import NotApplicable, PrivbenchError
from privbench.feature_matching import (
    FORA_ALPHAS,
    critic_loss,
    critic_step,
    gradient_penalty,
    kernel_bandwidths,
    mk_mmd,
)
from privbench.hookspecs import hookimpl
from privbench.image_prior import ImagePrior, deepest_side, likelihood_maximisation, prior_levels
from privbench.inversion import (
    OPTIMIZERS,
    MirroredDecoder,
    checked_tv_weight,
    from_normalised,
    invert,
    to_normalised,
    total_variation,
    train_decoder,
    train_decoder_with_critic,
    tv_size_factor,
    unsplit,
    without_random_layers,
)
from privbench.metrics import MetricSpec, register_metric, ssim_per_image
from privbench.models import Decoder, Normalize, classifier, feature_classifier, mlp, module_device
from privbench.params import param
from privbench.saliency import grad_cam, saliency_iou
from privbench.splitting import (
    ARCH_LAYERS,
    HE_CIFAR_LAYERS,
    LENET5_LAYERS,
    LENET_LAYERS,
    NOISES,
    RESNET18_LAYERS,
    TITCOMBE_LAYERS,
    FeaturePerturbation,
    SplitEncoder,
    SplitFeatureDefense,
    accepted_layers,
    check_known_layer,
    feature_size,
    layer_names,
    layer_problem,
    sent_shape,
    split_model,
)
from privbench.training import (
    EVAL_BATCH_SIZE,
    accuracy,
    adam,
    apply,
    batches,
    eval_batch_size,
    fit,
    one_torch_thread,
    resident,
    shuffled_epochs,
    train_classifier,
    train_server_on_encoded,
)
from privbench.view import AccessDenied, AttackView, DataFacts, EvaluationData, OwnerData

__all__ = [
    "FORA_ALPHAS", "critic_loss", "critic_step", "gradient_penalty", "kernel_bandwidths", "mk_mmd",
    "ImagePrior", "deepest_side", "likelihood_maximisation", "prior_levels",
    "ARCH_LAYERS", "HE_CIFAR_LAYERS", "accepted_layers",
    "ACCESS", "AccessDenied", "Artifact", "Attack", "AttackOutput", "AttackView", "DataFacts",
    "Dataset", "DatasetSource", "Decoder", "Defense", "EVAL_BATCH_SIZE", "EvaluationData",
    "FeaturePerturbation", "LENET5_LAYERS", "LENET_LAYERS", "LabelTask", "MetricSpec", "MirroredDecoder",
    "NOISES", "NotApplicable", "OwnerData", "PrivbenchError", "Protection", "RESNET18_LAYERS",
    "SplitEncoder", "SplitFeatureDefense", "THREAT_MODELS", "accuracy", "adam", "apply", "batches", "check_known_layer",
    "classifier", "digit_task_labels", "feature_classifier", "feature_size", "sent_shape", "fit", "grad_cam",
    "hookimpl", "invert", "layer_names", "mlp", "param", "register_metric", "saliency_iou",
    "split_model", "total_variation", "OPTIMIZERS", "from_normalised", "to_normalised", "unsplit",
    "without_random_layers",
    "tv_size_factor", "checked_tv_weight", "Normalize", "ssim_per_image", "layer_problem",
    "train_classifier", "train_decoder", "train_decoder_with_critic", "train_server_on_encoded", "shuffled_epochs",
    "one_torch_thread", "resident", "eval_batch_size", "module_device",
    "TITCOMBE_LAYERS", "blockwise", "distance_correlation", "rv_distance_correlation",
]
