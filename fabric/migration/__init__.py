"""Live migration: the engine state machine, its config, the receiver and the report."""

from fabric.migration.config import FaultPlan, MigrationConfig
from fabric.migration.engine import InjectedEngineError, MigrationEngine, Phase
from fabric.migration.loopback import LoopbackResult, migrate_in_process
from fabric.migration.receiver import IncomingMigration, IncomingState
from fabric.migration.report import MigrationReport, RoundStats

__all__ = [
    "FaultPlan", "IncomingMigration", "IncomingState", "InjectedEngineError", "LoopbackResult",
    "MigrationConfig", "MigrationEngine", "MigrationReport", "Phase", "RoundStats",
    "migrate_in_process",
]
