"""Errors of the placement layer: bad traces, bad policy configuration, unusable checkpoints.

They extend the fabric's flat hierarchy (`fabric.errors`), so a caller that
catches `FabricError` catches these too.
"""

from __future__ import annotations

from fabric.errors import ConfigError, FabricError


class TraceFormatError(FabricError):
    """A workload trace file (Azure arrivals, lifetimes, flavours, PlanetLab CPU) is not in its format."""


class UnknownPolicyError(ConfigError):
    """No placement policy of that name exists; the message lists the ones that do."""


class CheckpointError(FabricError):
    """A policy checkpoint is missing, unreadable, or was trained for a different environment."""
