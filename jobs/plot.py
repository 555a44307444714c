"""Plot a migration: pages remaining, bandwidth and dirty rate per pre-copy round over time, as a PNG.

    python jobs/plot.py report.json --out migration.png     # a report saved by migrate.py --json
    python jobs/migrate.py --vm kv-1 --to eu-west --plot migration.png
    novacron demo                                            # writes one and prints where

The top panel shows the pages still to send: each round starts with the pages
it must send and ends with those the guest dirtied meanwhile (the next round's
work); it converges when the guest dirties less than the link moves. The bottom
panel shows, per round, the bandwidth achieved and the guest's dirty rate; the
shaded span from the switchover line is the stop-and-copy round, the downtime.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import EXIT_BAD_INPUT, EXIT_OK, emit_json, fail
from jobs.render import MB, table

FIGURE_SIZE_IN = (10.0, 6.5)
DPI = 110
PRE_COPY_COLOUR = "tab:blue"
DIRTY_COLOUR = "tab:red"
SWITCHOVER_COLOUR = "tab:orange"


def parser() -> argparse.ArgumentParser:
    """Arguments of the plot job."""
    p = argparse.ArgumentParser(prog="plot", description=__doc__.split("\n\n")[0])
    p.add_argument("report", help="a migration report as JSON (migrate.py --json writes one)")
    p.add_argument("--out", default=None, help="PNG to write (default: the report's name with .png)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout and nothing else there")
    return p


def _rounds(report: dict[str, Any]) -> list[dict[str, Any]]:
    rounds = report.get("round_stats") or []
    if not rounds:
        raise ValueError(f"the report of {report.get('vm', '?')} has no rounds to plot "
                         f"(status {report.get('status', '?')}: {report.get('abort_reason') or 'no reason'})")
    return sorted(rounds, key=lambda s: (s["final"], s["index"]))


def plot_migration(report: dict[str, Any], path: str | Path) -> Path:
    """Write the PNG of `report` (a MigrationReport dict) to `path`; returns the absolute path."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a Ray node; must precede pyplot
    import matplotlib.pyplot as plt

    rounds = _rounds(report)
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=FIGURE_SIZE_IN, dpi=DPI)
    try:
        _draw_pages(top, rounds)
        _draw_rates(bottom, rounds)
        final = next((s for s in rounds if s["final"]), None)
        if final is not None:
            for ax in (top, bottom):
                ax.axvspan(final["started_s"], final["started_s"] + final["duration_s"],
                           color=SWITCHOVER_COLOUR, alpha=0.15, linewidth=0)
                ax.axvline(final["started_s"], color=SWITCHOVER_COLOUR, linestyle="--", linewidth=1.5,
                           zorder=3)
            top.annotate(f"switchover ({report.get('switchover_reason') or 'stop-and-copy'}), "
                         f"downtime {report.get('downtime_ms', 0):.0f} ms",
                         xy=(final["started_s"], 1.0), xycoords=("data", "axes fraction"),
                         xytext=(-4, -14), textcoords="offset points", color=SWITCHOVER_COLOUR,
                         fontsize=9, ha="right")
        fig.suptitle(_title(report), fontsize=11)
        bottom.set_xlabel("time since the migration was requested (s)")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _draw_pages(ax: Any, rounds: list[dict[str, Any]]) -> None:
    for s in rounds:
        start, end = s["started_s"], s["started_s"] + s["duration_s"]
        left = s["dirty_pages"] if not s["final"] else 0  # nothing is left after stop-and-copy
        colour = SWITCHOVER_COLOUR if s["final"] else PRE_COPY_COLOUR
        ax.plot([start, end], [s["pages"], left], color=colour, marker="o", markersize=3)
        label = "final" if s["final"] else f"r{s['index']}"
        ax.annotate(label, (start, s["pages"]), xytext=(2, 4), textcoords="offset points", fontsize=8)
    ax.set_ylabel("pages remaining")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def _draw_rates(ax: Any, rounds: list[dict[str, Any]]) -> None:
    for k, s in enumerate(rounds):
        span = [s["started_s"], s["started_s"] + s["duration_s"]]
        ax.plot(span, [s["bandwidth_mbps"]] * 2, color=PRE_COPY_COLOUR, linewidth=2.5,
                label="bandwidth (MB/s on the wire)" if k == 0 else None)
        if not s["final"]:  # the guest is stopped during the final round: nothing dirties
            ax.plot(span, [s["dirty_rate_mbps"]] * 2, color=DIRTY_COLOUR, linewidth=2.5,
                    label="dirty rate (MB/s)" if k == 0 else None)
    ax.set_ylabel("MB/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def _title(r: dict[str, Any]) -> str:
    return (f"{r.get('vm', '?')}: {r.get('source', '?')} -> {r.get('destination', '?')}, "
            f"{str(r.get('status', '?')).upper()}, {r.get('rounds', 0)} pre-copy rounds, "
            f"{r.get('total_time_ms', 0):.0f} ms total")


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code."""
    args = parser().parse_args(argv)
    source = Path(args.report)
    try:
        report = json.loads(source.read_text())
        if not isinstance(report, dict) or "round_stats" not in report:
            raise ValueError(f"{source} is not a migration report (no round_stats)")
        out = plot_migration(report, args.out or source.with_suffix(".png"))
    except (OSError, ValueError) as e:
        return fail(str(e), EXIT_BAD_INPUT, json_mode=args.json)
    rounds = _rounds(report)
    if args.json:
        emit_json({"plot": str(out), "vm": report.get("vm"), "rounds": len(rounds)})
        return EXIT_OK
    print(table([["final" if s["final"] else s["index"], s["started_s"], s["duration_s"] * 1000,
                  s["pages"], s["dirty_pages"], s["bandwidth_mbps"], s["dirty_rate_mbps"],
                  s["raw_bytes"] / MB] for s in rounds],
                ["round", "start s", "ms", "pages", "dirtied", "MB/s", "dirty MB/s", "MB"]))
    print(f"\nmigration plot: {out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
