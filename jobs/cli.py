"""The `novacron` command: demo, migrate, status, bench."""

from __future__ import annotations

import sys

USAGE = """usage: novacron COMMAND [options]

commands:
  demo      embedded Ray, three emulated data centers, one live migration
  migrate   live-migrate a VM:  novacron migrate --vm kv-1 --to eu-west
  status    data centers, nodes, VMs, migrations and ledger health
  bench     the migration benchmark (jobs/bench_migration.py)

'novacron COMMAND --help' describes each command's options."""


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the job named by the first argument."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from jobs.demo import main as run
    elif command == "migrate":
        from jobs.migrate import main as run
    elif command == "status":
        from jobs.status import main as run
    elif command == "bench":
        from jobs.bench_migration import main as run
    else:
        print(f"novacron: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
