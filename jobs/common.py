"""What every job shares: making the project importable, Ray set-up, options, exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

EXIT_OK = 0
EXIT_MIGRATION_FAILED = 1  # the operation ran and did not complete (e.g. a VM stays at its source)
EXIT_BAD_INPUT = 2  # bad arguments, unknown VM or node, invalid config


def add_connection_args(p: argparse.ArgumentParser) -> None:
    """--address and --json."""
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (default: $RAY_ADDRESS, else a new embedded Ray "
                        "with emulated data centers)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout and nothing else there")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def exit_code_for(error: BaseException) -> int:
    """The exit code of a fabric error: 2 when the request itself was wrong, else 1."""
    from fabric.errors import ConfigError, UnknownNodeError, UnknownVmError

    request_was_wrong = isinstance(error, ConfigError | UnknownNodeError | UnknownVmError)
    return EXIT_BAD_INPUT if request_was_wrong else EXIT_MIGRATION_FAILED


def add_migration_args(p: argparse.ArgumentParser) -> None:
    """The migration knobs a user may set from the command line."""
    p.add_argument("--downtime-ms", type=float, default=None,
                   help="downtime limit in ms (default 300, as QEMU)")
    p.add_argument("--max-bandwidth-mbps", type=float, default=None,
                   help="cap on the migration's bandwidth in MB/s (default: none)")
    p.add_argument("--rounds-max", type=int, default=None, help="pre-copy rounds at most (default 30)")
    p.add_argument("--on-limit", choices=["switchover", "abort"], default=None,
                   help="when a limit is hit before the downtime fits (default switchover)")
    p.add_argument("--verify", choices=["incremental", "full"], default=None,
                   help="how the destination computes its digest (default incremental)")


def migration_config(args: argparse.Namespace) -> dict[str, Any]:
    """The MigrationConfig overrides given on the command line."""
    pairs = {"downtime_ms_limit": args.downtime_ms, "max_bandwidth_mbps": args.max_bandwidth_mbps,
             "rounds_max": args.rounds_max, "on_limit": args.on_limit, "verify": args.verify}
    return {k: v for k, v in pairs.items() if v is not None}


def quiet_ray_logs(json_mode: bool) -> dict[str, Any]:
    """ray.init options that keep a --json job's stdout to the one object."""
    if not json_mode:
        return {}
    logging.getLogger("ray").setLevel(logging.ERROR)
    return {"log_to_driver": False, "logging_level": logging.ERROR}


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = EXIT_BAD_INPUT, json_mode: bool = False) -> int:
    """Report an error (stderr, and as JSON with --json); return the exit code."""
    print(f"error: {message}", file=sys.stderr)
    if json_mode:
        emit_json({"error": message, "exit_code": code})
    return code
