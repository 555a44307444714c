"""The `novacron` command: demo, migrate, evacuate, rebalance, status, plot, bench NAME."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

# command -> (module, one line for the usage text)
COMMANDS = {
    "demo": ("jobs.demo", "embedded Ray, three emulated data centers, one live migration and its plot"),
    "migrate": ("jobs.migrate", "live-migrate a VM:  novacron migrate --vm kv-1 --to eu-west"),
    "evacuate": ("jobs.evacuate", "empty a node or data center:  novacron evacuate --from us-west-2"),
    "rebalance": ("jobs.rebalance", "move VMs off hot hosts as the placement policy advises"),
    "status": ("jobs.status", "data centers, nodes, VMs, running migrations and ledger health"),
    "plot": ("jobs.plot", "a migration report (JSON) as a PNG of its rounds"),
    "bench": ("", "a benchmark by name:  novacron bench NAME  (novacron bench --help lists them)"),
}
EXIT_BAD_INPUT = 2  # as jobs.common, without importing it for a usage message

USAGE = ("usage: novacron COMMAND [options]\n\ncommands:\n"
         + "\n".join(f"  {name:<10}{line}" for name, (_, line) in COMMANDS.items())
         + "\n\n'novacron COMMAND --help' describes each command's options.")


def bench_names() -> list[str]:
    """The benchmarks: jobs/bench_<name>.py."""
    return sorted(p.stem[len("bench_"):] for p in Path(__file__).parent.glob("bench_*.py"))


def _summary(name: str) -> str:
    # Read from the source, not by importing: some benchmarks pull in torch or Ray.
    doc = ast.get_docstring(ast.parse((Path(__file__).parent / f"bench_{name}.py").read_text())) or ""
    return doc.split("\n")[0]


def bench_usage() -> str:
    """Usage of `novacron bench`, with each benchmark's first docstring line."""
    return ("usage: novacron bench NAME [options]\n\nbenchmarks:\n"
            + "\n".join(f"  {n:<15}{_summary(n)}" for n in bench_names())
            + "\n\n'novacron bench NAME --help' describes a benchmark's options.")


def run_bench(argv: list[str]) -> int:
    """Dispatch `novacron bench NAME ...` to jobs/bench_NAME.py."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(bench_usage())
        return 0 if argv else EXIT_BAD_INPUT
    name = argv[0].replace("-", "_")
    if name not in bench_names():
        print(f"novacron bench: no benchmark {argv[0]!r}\n\n{bench_usage()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return importlib.import_module(f"jobs.bench_{name}").main(argv[1:])


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the job named by the first argument."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else EXIT_BAD_INPUT
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"novacron: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if command == "bench":
        return run_bench(rest)
    return importlib.import_module(COMMANDS[command][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
