"""Cache and cell keys: a stable short hash of everything that determines a result (no torch)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def config_key(config: dict[str, Any]) -> str:
    """A stable short hash of a JSON-able config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
