"""Independent random streams of one cell, derived from its seed and the store's run secret.

Every cell has a public ``seed`` (it is in the cell's key, the results and the plan) and every store
has a private run secret (``privbench.store.Store.run_secret``: 128 random bits drawn once per
store, kept in the store, never in a key, a file name, a log or an export). There are six parties,
each with a 63-bit seed of its own:

- ``split``: which images go to the owner, the attacker's aux split and the test split;
- ``service``: the unprotected target model's initial weights and batch order;
- ``defender``: the defense's key, initial weights and noise while it fits;
- ``attacker``: the attack's initial weights, sampling and queries (and the examiner it trains);
- ``evaluation``: the noise in the protected test images the attacker observes, which test images
  an attack is scored on, and which classes a class-membership cell holds out;
- ``query``: the randomness of the defender's encoder while it answers the attacker's queries.

Derivation (``i`` is the party's index in ``PARTIES``; each child's state is drawn as one uint64
and shifted right by one bit)::

    attacker             SeedSequence(seed).spawn(6)[i]                          (seed alone)
    every other party    SeedSequence(secret, spawn_key=(seed,)).spawn(6)[i]     (secret and seed)

Why: an attack plugin is untrusted code and runs where it can read the cell's seed, and the
harness seeds its stream from that seed; with everything derived from the seed alone, public code
plus the seed rebuilt the test split, its labels and the defender's key. Now the only stream the
seed gives is the attacker's own; the split, the target model, the defender's key, the evaluation
noise and the encoder's answers need the secret too, which never reaches an attacker's process.
The attacker's stream is the same with or without a secret (so attacks reproduce across stores),
and it is the one the seed gave before the secret existed.

``secret=None`` derives every party from the seed alone, ``SeedSequence(seed).spawn(6)[i]``,
exactly what privbench did before the secret (``query``, a later addition, is the sixth child, so
it changes none of the other five). It is for tests and trusted tools that have no store: a
benchmark run always passes its store's secret.

``secret_id`` is a public fingerprint of the secret (the first 16 hex digits of the SHA-256 of
``"privbench-secret-id:" + str(secret)``, ``""`` without a secret). It goes into the cache keys of
everything built on the split, so two stores with different secrets never share such an artifact.
A ``Streams`` holds derived values only, never the secret, and its repr shows only the public
ones (seed, attacker, secret_id): it may be logged.

Changing one party's stream changes nothing the others draw. The harness seeds Python's, NumPy's
and torch's global generators from the party's stream before that party's code runs (plugins never
seed them), and hands each party a ``torch.Generator`` of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass

PARTIES = ("split", "service", "defender", "attacker", "evaluation", "query")
PUBLIC_PARTIES = ("attacker",)  # derived from the seed alone, with or without a secret
SECRET_PARTIES = tuple(party for party in PARTIES if party not in PUBLIC_PARTIES)


def fingerprint(secret: int | None) -> str:
    """The public fingerprint of ``secret``: 16 hex digits of its SHA-256, or ``""`` for none."""
    if secret is None:
        return ""
    return hashlib.sha256(f"privbench-secret-id:{secret}".encode()).hexdigest()[:16]


def _private() -> dataclasses.Field:
    return dataclasses.field(repr=False)


@dataclass(frozen=True)
class Streams:
    """The 63-bit seeds of the six parties of one cell, and the public fingerprint of the secret."""

    seed: int
    split: int = _private()
    service: int = _private()
    defender: int = _private()
    attacker: int  # the seed alone: safe to show
    evaluation: int = _private()
    query: int = _private()
    secret_id: str = ""

    @classmethod
    def from_seed(cls, seed: int, secret: int | None = None) -> Streams:
        """The streams of the cell ``seed`` in the store whose run secret is ``secret``; ``None``
        (tests and trusted tools without a store only) derives every stream from the seed."""
        import numpy as np
        public = np.random.SeedSequence(seed).spawn(len(PARTIES))
        if secret is None:
            children = public
        else:
            if isinstance(secret, bool) or not isinstance(secret, int) or secret < 0:
                raise ValueError("the run secret must be a non-negative int")
            private = np.random.SeedSequence(secret, spawn_key=(seed,)).spawn(len(PARTIES))
            children = [public[i] if party in PUBLIC_PARTIES else private[i]
                        for i, party in enumerate(PARTIES)]
        seeds = {party: int(child.generate_state(1, dtype=np.uint64)[0]) >> 1
                 for party, child in zip(PARTIES, children, strict=True)}
        return cls(seed, **seeds, secret_id=fingerprint(secret))

    def generator(self, party: str):
        """A fresh ``torch.Generator`` seeded from ``party``'s stream."""
        import torch
        if party not in PARTIES:
            raise ValueError(f"unknown party {party!r}; accepted: {', '.join(PARTIES)}")
        return torch.Generator().manual_seed(getattr(self, party))


def seed_globals(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators: done by the harness
    before a party's code runs, never by a plugin."""
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
