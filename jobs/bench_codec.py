"""Benchmark: the HDE codec on real guest captures, next to plain zstd on the same page stream.

    python jobs/bench_codec.py                       # table; JSON written to out/
    python jobs/bench_codec.py --json                # one JSON object on stdout
    python jobs/bench_codec.py --guest PATH --guest PATH2 --no-verify

Each capture becomes a page stream as a migration sends it: round 0 is every
non-zero page of the base image, round k the pages of delta k (re-sent, so
dedup and delta apply), cut into batches of --batch-pages. Every method
encodes the same batches, interleaved batch by batch so that a busy machine
slows them alike: each encoding forced on its own, the full pipeline at fixed
zstd levels, the adaptive selector at stated link rates, and plain zstd level
1 and 3 (one-shot, per batch) on the same raw bytes. Speeds are MB/s of raw
guest bytes per CPU second of the encoding thread (per core); ratios are raw
bytes / wire bytes, where the codec's wire bytes are whole Arrow batches (row
columns included) and plain zstd's are its compressed bytes alone. With
--verify (default) every codec method's batches are decoded into a fresh
memory that must end equal to the source, and decode speed is reported.

Yardstick (issue): the codec at >= 0.8x plain zstd-1's speed per core at no
worse ratio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import zstandard

from fabric.codec import PROFILES, CodecProfile, FrameChoice, PageDecoder, PageEncoder
from fabric.memory import PageStore, page_hashes
from fabric.traces import GuestCapture, default_guest_captures
from fabric.wire import BATCH_PAGES_MAX, BatchHeader, encode_raw, wire_bytes
from jobs.common import EXIT_BAD_INPUT, EXIT_OK, emit_json, fail

MB = 1_000_000
GBIT = 125e6  # 1 Gbit/s in bytes per second
YARDSTICK_SPEED = 0.8  # x plain zstd-1's MB/s per core, at no worse ratio
YARDSTICK_METHODS = ("adaptive datacenter @1Gbit/s", "adaptive datacenter @unbounded")

_cpu = time.thread_time


@dataclass
class _Tally:
    raw_bytes: int = 0
    wire_bytes: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0
    pages_by_encoding: dict[str, int] = field(default_factory=dict)


class _Method:
    """One way to encode the stream: a name, an encode function, and optionally a decoder."""

    def __init__(self, name: str, encode: Callable[[BatchHeader, np.ndarray, np.ndarray, np.ndarray],
                                                   tuple[Any, int, dict[str, int]]],
                 decoder: PageDecoder | None = None, stats: Callable[[], dict[str, Any]] | None = None,
                 link_bytes_per_s: float | None = None) -> None:
        self.name = name
        self.encode = encode
        self.decoder = decoder
        self.stats = stats
        self.link_bytes_per_s = link_bytes_per_s
        self.tally = _Tally()


def _profile_only(name: str, *, delta: bool, dedup: bool, levels: tuple[int, ...] = (1,),
                  dictionary: bool = False, frame_bytes: int = 256 << 10) -> CodecProfile:
    return CodecProfile(name=name, zstd_levels=levels, delta=delta, dedup=dedup, dictionary=dictionary,
                        frame_bytes=frame_bytes, explore_fraction=0.0)


def _codec_method(name: str, pages: int, profile: CodecProfile, *, link_bytes_per_s: float | None,
                  frame_choice: FrameChoice | None, verify: bool, seed: int) -> _Method:
    encoder = PageEncoder(pages=pages, profile=profile, frame_choice=frame_choice, seed=seed, cpu_clock=_cpu)

    def encode(header: BatchHeader, idx: np.ndarray, contents: np.ndarray,
               hashes: np.ndarray) -> tuple[Any, int, dict[str, int]]:
        e = encoder.encode(header, idx, contents, hashes, link_bytes_per_s=link_bytes_per_s)
        return e.batch, e.wire_bytes, e.pages_by_encoding

    decoder = PageDecoder(memory=PageStore(pages)) if verify else None
    return _Method(name, encode, decoder, encoder.stats, link_bytes_per_s)


def _plain_zstd_method(level: int) -> _Method:
    cctx = zstandard.ZstdCompressor(level=level)

    def encode(header: BatchHeader, idx: np.ndarray, contents: np.ndarray,
               hashes: np.ndarray) -> tuple[Any, int, dict[str, int]]:
        return None, len(cctx.compress(contents)), {}

    return _Method(f"plain zstd-{level}", encode)


def _raw_wire_method(pages: int, verify: bool) -> _Method:
    def encode(header: BatchHeader, idx: np.ndarray, contents: np.ndarray,
               hashes: np.ndarray) -> tuple[Any, int, dict[str, int]]:
        batch = encode_raw(header, idx, contents, hashes)
        return batch, wire_bytes(batch), {"raw": int(idx.size)}

    return _Method("raw rows (no codec)", encode, PageDecoder(memory=PageStore(pages)) if verify else None)


def methods_for(pages: int, *, verify: bool, seed: int, internet_link_bytes_per_s: float) -> list[_Method]:
    """Every method the benchmark runs on one capture, in table order."""
    z1, z3 = FrameChoice(level=1), FrameChoice(level=3)
    dc = PROFILES["datacenter"]
    full = _profile_only("full", delta=True, dedup=True, levels=(1, 3))

    def codec(name: str, profile: CodecProfile, choice: FrameChoice | None,
              link: float | None = None) -> _Method:
        return _codec_method(name, pages, profile, link_bytes_per_s=link, frame_choice=choice, verify=verify,
                             seed=seed)

    raw = FrameChoice(level=0)
    return [
        _raw_wire_method(pages, verify),
        codec("zero only", _profile_only("zero", delta=False, dedup=False), raw),
        codec("zero+ref", _profile_only("ref", delta=False, dedup=True), raw),
        codec("zero+delta", _profile_only("delta", delta=True, dedup=False), raw),
        codec("zero+zstd-1 frames", _profile_only("z1", delta=False, dedup=False), z1),
        codec("zero+zstd-3 frames", _profile_only("z3", delta=False, dedup=False, levels=(3,)), z3),
        codec("all, zstd-1", full, z1),
        codec("all, zstd-3", full, z3),
        codec("all, zstd-3+dict", _profile_only("dict", delta=True, dedup=True, levels=(3,), dictionary=True),
              FrameChoice(level=3, dictionary=True)),
        codec("adaptive datacenter @1Gbit/s", dc, None, GBIT),
        codec("adaptive datacenter @unbounded", dc, None, None),
        codec(f"adaptive internet @{internet_link_bytes_per_s * 8 / 1e6:g}Mbit/s", PROFILES["internet"], None,
              internet_link_bytes_per_s),
        _plain_zstd_method(1),
        _plain_zstd_method(3),
    ]


def page_stream(capture: GuestCapture, batch_pages: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(round, page numbers, contents) batches: round 0 the non-zero base pages, round k delta k."""
    base = capture.read_base()
    nonzero = np.flatnonzero(base.view(np.uint64).any(axis=1)).astype(np.uint32)
    for a in range(0, nonzero.size, batch_pages):
        idx = nonzero[a:a + batch_pages]
        yield 0, idx, base[idx]
    del base
    for k in range(1, capture.meta.deltas + 1):
        idx, pages = capture.read_delta(k)
        for a in range(0, idx.size, batch_pages):
            yield k, idx[a:a + batch_pages], np.ascontiguousarray(pages[a:a + batch_pages])


def run_capture(path: Path, *, batch_pages: int = BATCH_PAGES_MAX, verify: bool = True, seed: int = 0,
                internet_link_bytes_per_s: float = 12.5e6) -> dict[str, Any]:
    """Encode one capture's page stream with every method, interleaved batch by batch."""
    capture = GuestCapture(path)
    pages = capture.meta.pages
    methods = methods_for(pages, verify=verify, seed=seed,
                          internet_link_bytes_per_s=internet_link_bytes_per_s)
    source = PageStore(pages) if verify else None
    seq = 0
    stream = page_stream(capture, batch_pages)
    first = next(stream)
    # Warm up (imports, first allocations, zstd contexts) on throwaway methods, untimed.
    header = BatchHeader(vm=capture.meta.name, epoch=1, round=0, seq=0)
    for m in methods_for(pages, verify=False, seed=seed, internet_link_bytes_per_s=internet_link_bytes_per_s):
        m.encode(header, first[1], first[2], page_hashes(first[2]))
    for rnd, idx, contents in itertools.chain([first], stream):
        hashes = page_hashes(contents)
        header = BatchHeader(vm=capture.meta.name, epoch=1, round=rnd, seq=seq)
        if source is not None:
            source.write_pages(idx, contents)
        # Rotate who goes first, so no method always finds the batch cold (or warm) in the cache.
        first_method = seq % len(methods)
        for m in methods[first_method:] + methods[:first_method]:
            t = _cpu()
            batch, size, by_encoding = m.encode(header, idx, contents, hashes)
            m.tally.encode_s += _cpu() - t
            m.tally.raw_bytes += contents.nbytes
            m.tally.wire_bytes += size
            for k, v in by_encoding.items():
                m.tally.pages_by_encoding[k] = m.tally.pages_by_encoding.get(k, 0) + v
            if m.decoder is not None:
                t = _cpu()
                applied = m.decoder.apply(batch)
                m.tally.decode_s += _cpu() - t
                if applied.missing.size:
                    raise AssertionError(f"{m.name}: {applied.missing.size} pages unresolved")
        seq += 1
    results = []
    for m in methods:
        t = m.tally
        verified = None
        if m.decoder is not None and source is not None:
            verified = bool(np.array_equal(m.decoder.memory.view(), source.view()))
            if not verified:
                raise AssertionError(f"{m.name}: decoded memory differs from the source")
        mbps = t.raw_bytes / t.encode_s / MB if t.encode_s > 0 else float("inf")
        ratio = t.raw_bytes / t.wire_bytes
        results.append({
            "method": m.name, "raw_bytes": t.raw_bytes, "wire_bytes": t.wire_bytes, "ratio": ratio,
            "encode_cpu_s": t.encode_s, "encode_mbps_per_core": mbps,
            "decode_mbps_per_core": t.raw_bytes / t.decode_s / MB if t.decode_s > 0 else None,
            "link_bytes_per_s": m.link_bytes_per_s,
            "effective_mbps_at_1gbit": min(GBIT * ratio, mbps * MB) / MB,
            "pages_by_encoding": t.pages_by_encoding, "verified": verified,
            "codec_stats": m.stats() if m.stats else None,
        })
    return {"capture": capture.meta.name, "path": str(path), "pages": pages, "batches": seq,
            "methods": results, "yardstick": yardstick(results)}


def yardstick(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For the adaptive methods: speed vs plain zstd-1 (>= 0.8x) and ratio vs plain zstd-1 (>=)."""
    by_name = {r["method"]: r for r in results}
    z1 = by_name["plain zstd-1"]
    out = []
    for name in (*YARDSTICK_METHODS, "all, zstd-1"):
        r = by_name[name]
        speed = r["encode_mbps_per_core"] / z1["encode_mbps_per_core"]
        ratio = r["ratio"] / z1["ratio"]
        out.append({"method": name, "speed_vs_zstd1": speed, "ratio_vs_zstd1": ratio,
                    "met": speed >= YARDSTICK_SPEED and ratio >= 1.0})
    return out


def run(captures: list[Path], *, batch_pages: int = BATCH_PAGES_MAX, verify: bool = True, seed: int = 0,
        internet_link_bytes_per_s: float = 12.5e6) -> dict[str, Any]:
    """The benchmark over `captures`: per capture, every method's ratio and speed; JSON-ready."""
    if not 1 <= batch_pages <= BATCH_PAGES_MAX:
        raise ValueError(f"batch_pages = {batch_pages}; use 1..{BATCH_PAGES_MAX}")
    results = [run_capture(c, batch_pages=batch_pages, verify=verify, seed=seed,
                           internet_link_bytes_per_s=internet_link_bytes_per_s) for c in captures]
    return {
        "benchmark": "bench_codec",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "zstandard": zstandard.__version__,
                    "load_average": os.getloadavg()},
        "batch_pages": batch_pages, "seed": seed,
        "notes": "MB/s = raw guest bytes per CPU second of the encoding thread; codec wire bytes are "
                 "whole Arrow batches, plain zstd's are compressed bytes alone (one-shot per batch); "
                 "methods interleaved batch by batch, first method rotating",
        "results": results,
    }


def tables(out: dict[str, Any]) -> str:
    """The benchmark's result as text: a table per capture and the yardstick verdicts."""
    from jobs.render import table

    lines: list[str] = []
    for res in out["results"]:
        lines.append(f"\n{res['capture']}: {res['batches']} batches of up to {out['batch_pages']} pages, "
                     f"{res['methods'][0]['raw_bytes'] / MB:.1f} MB raw")
        rows = [[r["method"], r["ratio"], r["encode_mbps_per_core"], r["decode_mbps_per_core"],
                 r["effective_mbps_at_1gbit"], r["wire_bytes"] / MB,
                 " ".join(f"{k}={v}" for k, v in sorted(r["pages_by_encoding"].items()) if v)]
                for r in res["methods"]]
        lines.append(table(rows, ["method", "ratio", "enc MB/s/core", "dec MB/s/core", "eff MB/s @1Gbit",
                                  "wire MB", "pages by encoding"]))
        for y in res["yardstick"]:
            lines.append(f"  yardstick {y['method']}: {y['speed_vs_zstd1']:.2f}x zstd-1 speed, "
                         f"{y['ratio_vs_zstd1']:.2f}x its ratio -> {'MET' if y['met'] else 'NOT MET'}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(prog="bench_codec", description=__doc__.split("\n\n")[0])
    p.add_argument("--guest", action="append", default=None, metavar="PATH",
                   help="a guest-memory capture folder (repeatable; default: the shared captures)")
    p.add_argument("--batch-pages", type=int, default=BATCH_PAGES_MAX,
                   help=f"pages per batch (default {BATCH_PAGES_MAX}, 16 MiB)")
    p.add_argument("--internet-mbit", type=float, default=100.0,
                   help="link rate of the adaptive internet run, Mbit/s (default 100)")
    p.add_argument("--no-verify", action="store_true", help="skip decoding and the memory comparison")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/bench_codec.json", help="where to write the JSON ('' for nowhere)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""

    args = parser().parse_args(argv)
    captures = [Path(g) for g in args.guest] if args.guest else default_guest_captures()
    if not captures:
        return fail("no guest captures found: pass --guest PATH or set NOVACRON_DATA", EXIT_BAD_INPUT,
                    json_mode=args.json)
    try:
        out = run(captures, batch_pages=args.batch_pages, verify=not args.no_verify, seed=args.seed,
                  internet_link_bytes_per_s=args.internet_mbit * 1e6 / 8)
    except (ValueError, OSError) as e:
        return fail(str(e), EXIT_BAD_INPUT, json_mode=args.json)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    if args.json:
        emit_json(out)
        return EXIT_OK
    print(tables(out))
    print(f"\n{out['notes']}; load average {out['machine']['load_average']}")
    if args.out:
        print(f"JSON: {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
