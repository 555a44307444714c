"""What every placement policy offers the evaluation and the placement service."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class PlacementPolicy(Protocol):
    """Observations of every data center in, one action per data center out."""

    name: str

    def act(self, observations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each data center's action for its observation."""
        ...
