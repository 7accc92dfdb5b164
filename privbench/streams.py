"""Independent random streams of one cell, derived from its seed.

``numpy.random.SeedSequence(seed).spawn(5)`` gives five independent children, one per party, in this
fixed order:

- ``split``: which images go to the owner, the attacker's aux split and the test split;
- ``service``: the unprotected target model's initial weights and batch order;
- ``defender``: the defense's key, initial weights and noise while it fits;
- ``attacker``: the attack's initial weights, sampling and queries (and the examiner it trains);
- ``evaluation``: the noise in the protected test images the attacker observes, which test images
  an attack is scored on, and which classes a class-membership cell holds out.

Changing one party's stream changes nothing the others draw. The harness seeds Python's, NumPy's
and torch's global generators from the party's stream before that party's code runs (plugins never
seed them), and hands each party a ``torch.Generator`` of its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PARTIES = ("split", "service", "defender", "attacker", "evaluation")


@dataclass(frozen=True)
class Streams:
    """The 63-bit seeds of the five parties of one cell."""

    seed: int
    split: int
    service: int
    defender: int
    attacker: int
    evaluation: int

    @classmethod
    def from_seed(cls, seed: int) -> Streams:
        import numpy as np
        children = np.random.SeedSequence(seed).spawn(len(PARTIES))
        seeds = [int(child.generate_state(1, dtype=np.uint64)[0]) >> 1 for child in children]
        return cls(seed, *seeds)

    def generator(self, party: str):
        """A fresh ``torch.Generator`` seeded from ``party``'s stream."""
        import torch
        return torch.Generator().manual_seed(getattr(self, party))


def seed_globals(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators: done by the harness
    before a party's code runs, never by a plugin."""
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
