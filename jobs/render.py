"""Text output for jobs: tables, the migration report, progress bars per pre-copy round and per evacuation."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

MB = 1_000_000
BAR_WIDTH = 30
LOG_BAR_EVERY_S = 5.0  # off a TTY (job logs) a changed total bar is repeated at most this often


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def report_text(report: dict[str, Any]) -> str:
    """The migration report as a summary and a table of rounds."""
    r = report
    lines = [
        f"migration of {r['vm']}: {r['source']} -> {r['destination']} (epoch {r['epoch']}): "
        f"{r['status'].upper()}" + (f" - {r['abort_reason']}" if r["abort_reason"] else ""),
        f"  VM now runs on   {r['vm_location'] or 'nowhere (see reason)'}",
        f"  total time       {r['total_time_ms']:.0f} ms (setup {r['setup_time_ms']:.0f} ms)",
        f"  downtime         {r['downtime_ms']:.1f} ms (expected {r['expected_downtime_ms']:.1f} ms, "
        f"limit {r['downtime_ms_limit']:g} ms)"
        + (" = " + ", ".join(f"{k} {v:.1f}" for k, v in r["downtime_breakdown_ms"].items())
           if r.get("downtime_breakdown_ms") else ""),
        f"  rounds           {r['rounds']} pre-copy + stop-and-copy"
        + (f" (switchover: {r['switchover_reason']})" if r["switchover_reason"] else ""),
        f"  transferred      {r['pages_transferred']:,} pages, {r['raw_bytes'] / MB:.1f} MB raw, "
        f"{r['wire_bytes'] / MB:.1f} MB on the wire; {r['zero_pages_skipped']:,} zero pages skipped",
        f"  throughput       {r['throughput_mbps']:.1f} MB/s; dirty rate {r['dirty_rate_mbps']:.1f} MB/s "
        f"({r['dirty_pages_rate']:.0f} pages/s)",
        f"  digest           {r['source_digest'][:16] or '-'} (source) / "
        f"{r['destination_digest'][:16] or '-'} (destination), {r['verify']}",
        f"  link             {r['link']}",
        f"  workload         {r['workload']}",
    ]
    rounds = r.get("round_stats") or []
    if rounds:
        rows = [["final" if s["final"] else s["index"], s["pages"], s["raw_bytes"] / MB,
                 s["duration_s"] * 1000, s["bandwidth_mbps"], s["dirty_rate_mbps"],
                 s["expected_downtime_ms"] if not s["final"] else None] for s in rounds]
        lines += ["", table(rows, ["round", "pages", "MB", "ms", "MB/s", "dirty MB/s",
                                   "expected downtime ms"])]
    return "\n".join(lines)


class RoundBars:
    """One progress bar per pre-copy round, drawn from progress snapshots."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self._drawn: set[Any] = set()
        self._live: Any = None
        self._tty = out.isatty()

    def _bar(self, label: str, done: int, total: int, extra: str = "") -> str:
        frac = 1.0 if total == 0 else min(1.0, done / total)
        fill = int(frac * BAR_WIDTH)
        return f"  {label:<13} [{'#' * fill}{'.' * (BAR_WIDTH - fill)}] {done:>7,}/{total:<7,} pages {extra}"

    def update(self, progress: dict[str, Any] | None) -> None:
        """Draw rounds that finished since the last call, and the current one on a TTY."""
        if not progress or "rounds_done" not in progress:
            return
        for s in progress["rounds_done"]:
            self._finish_round(s)
        rnd = progress.get("round")
        if self._tty and rnd is not None and rnd not in self._drawn:
            label = "stop-and-copy" if progress.get("final_round") else f"round {rnd}"
            self.out.write("\r" + self._bar(label, progress["round_pages_done"],
                                            progress["round_pages_total"]))
            self.out.flush()
            self._live = rnd

    def _finish_round(self, s: dict[str, Any]) -> None:
        if s["index"] in self._drawn:
            return
        self._drawn.add(s["index"])
        label = "stop-and-copy" if s["final"] else f"round {s['index']}"
        extra = f"{s['duration_s'] * 1000:7.0f} ms {s['bandwidth_mbps']:7.1f} MB/s"
        prefix = "\r" if self._tty and self._live is not None else ""
        self.out.write(prefix + self._bar(label, s["pages"], s["pages"], extra) + "\n")
        self.out.flush()
        self._live = None

    def finish(self, report: dict[str, Any]) -> None:
        """Draw whatever rounds the polling missed."""
        self.update({"rounds_done": [r for r in report.get("round_stats", [])]})


def follow(poll: Callable[[], dict[str, Any]], bars: RoundBars | None,
           interval_s: float = 0.05) -> None:
    """Poll a migration's progress until it is no longer active, drawing bars."""
    while True:
        p = poll()
        if bars is not None:
            bars.update(p.get("progress"))
        if p["status"] != "active":
            return
        time.sleep(interval_s)


class EvacuationProgress:
    """An evacuation drawn from status polls: a line per migration as it starts and ends, and a total bar."""

    def __init__(self, total: int, out: TextIO = sys.stderr) -> None:
        self.total = total
        self.out = out
        self._tty = out.isatty()
        self._started: set[str] = set()
        self._ended: dict[str, str] = {}
        self._last_bar = ""
        self._last_bar_at = 0.0

    def update(self, migrations: Sequence[dict[str, Any]], outgoing: dict[str, dict[str, Any]]) -> None:
        """Draw from this evacuation's status()["migrations"] entries and the engines' progress by VM."""
        lines = []
        for m in migrations:
            if m["id"] not in self._started:
                self._started.add(m["id"])
                lines.append(f"  started    {m['vm']}: {m['source']} -> {m['destination']} ({m['id']})")
            if m["status"] != "active" and m["id"] not in self._ended:
                self._ended[m["id"]] = m["status"]
                lines.append(f"  {m['status']:<10} {m['vm']}: now on "
                             f"{m['destination'] if m['status'] == 'completed' else m['source']}")
        running = [m for m in migrations if m["status"] == "active"]
        bar = self._bar(running, outgoing)
        if self._tty:
            for line in lines:
                self.out.write("\r\x1b[K" + line + "\n")
            self.out.write("\r\x1b[K" + bar)
        else:  # job logs: whole lines only; the bar after events, else when changed and not too often
            for line in lines:
                self.out.write(line + "\n")
            now = time.monotonic()
            if lines or (bar != self._last_bar and now - self._last_bar_at >= LOG_BAR_EVERY_S):
                self.out.write(bar + "\n")
                self._last_bar_at = now
        self._last_bar = bar
        self.out.flush()

    def _bar(self, running: Sequence[dict[str, Any]], outgoing: dict[str, dict[str, Any]]) -> str:
        moved = sum(1 for s in self._ended.values() if s == "completed")
        not_moved = len(self._ended) - moved
        frac = 1.0 if self.total == 0 else len(self._ended) / self.total
        fill = int(frac * BAR_WIDTH)
        parts = []
        for m in running:
            p = outgoing.get(m["vm"]) or {}
            if p.get("round") is None:
                parts.append(f"{m['vm']} setup")
                continue
            done, total = p.get("round_pages_done", 0), p.get("round_pages_total", 0)
            pct = 100 if total == 0 else 100 * done // total
            label = "stop-and-copy" if p.get("final_round") else f"round {p['round']}"
            parts.append(f"{m['vm']} {label} {pct}%")
        return (f"  [{'#' * fill}{'.' * (BAR_WIDTH - fill)}] {moved}/{self.total} moved"
                + (f", {not_moved} not moved" if not_moved else "")
                + (f"; running: {', '.join(parts)}" if parts else ""))

    def finish(self) -> None:
        """End the live line."""
        if self._tty:
            self.out.write("\n")
            self.out.flush()
