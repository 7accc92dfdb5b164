"""Defense ``identity``: no protection, the baseline every table needs.

The data owner sends the raw image; the untrusted party runs the unprotected target model on it.
Every access fact holds: the "encoder" is the identity map, known to everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from privbench.api import (
    Defense,
    Protection,
    hookimpl,
)


@dataclass
class Identity(Defense):
    """Send the image as it is; the server is the unprotected target model."""

    name: ClassVar[str] = "identity"
    summary: ClassVar[str] = "no protection: the raw image goes to the unprotected target model"
    claims: ClassVar[frozenset[str]] = frozenset()  # the baseline claims nothing: ranked over every threat model

    def build(self, facts) -> Protection:
        return Protection(encoder=nn.Identity(),
                          server=facts.service_classifier())

    def fit(self, owner) -> Protection:
        return Protection(encoder=nn.Identity(), server=owner.target_model())


@hookimpl
def register_defenses(register):
    register(Identity)
