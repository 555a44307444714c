"""Benchmark: SecureChannel seal and open throughput next to the cryptography library's raw AES-GCM.

    python jobs/bench_secure.py                 # table; JSON written to out/
    python jobs/bench_secure.py --json          # one JSON object on stdout
    python jobs/bench_secure.py --sizes 65536 1048576 --repeats 9

For each frame size, every repeat times, side by side on the same buffer and
the same associated data (a real batch header's metadata), each SecureChannel
call interleaved frame by frame with its raw counterpart so both see the same
cache and allocator state:

    raw encrypt       AESGCM(key).encrypt(nonce, buf, aad): allocates ciphertext + tag
    raw encrypt_into  AESGCM(key).encrypt_into(..., out): into one reused buffer
    seal              SecureChannel.seal(buf, aad): a new frame (header + ciphertext + tag)
    seal_into         SecureChannel.seal_into(buf, aad, out): into one reused buffer
    seal_into_numpy   seal_into a new numpy.empty array per frame: fresh memory, not zero-filled
    raw decrypt       AESGCM(key).decrypt(nonce, ct, aad)
    open              SecureChannel.open(frame, aad): header, window, then decrypt
    frame alloc       bytearray(frame size) alone: the zero-filled buffer seal writes into

seal does not copy the payload: it encrypts straight into its frame; its one
extra pass over the frame is the zero fill of that new bytearray, measured on
its own as "frame alloc"; seal_into skips it. open decrypts from a view of
the frame. Medians of the repeats are reported, after one warm-up round.
Pure Python, no Ray.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.common import EXIT_OK, emit_json, fail

MB = 1_000_000
SIZES_BYTES = (64 << 10, 1 << 20, 16 << 20)
REPEATS = 7
# Bytes each timed sample processes: enough frames of the small sizes to time
# well above the clock's resolution, and at least two frames of the largest.
SAMPLE_BYTES = 32 << 20
METHODS = ("raw_encrypt", "raw_encrypt_into", "seal", "seal_into", "seal_into_numpy", "raw_decrypt", "open",
           "frame_alloc")


def _channels() -> tuple[Any, Any]:
    """A source and destination channel from a real handshake."""
    from fabric.secure import (
        HandshakeInitiator,
        HandshakeResponder,
        NodeIdentity,
        SecureChannel,
        migration_context,
    )

    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    context = migration_context(vm="bench", epoch=1, source="us-east-1", destination="eu-west-1")
    init = HandshakeInitiator(a, b.public_bytes, context)
    resp = HandshakeResponder(b, a.public_bytes, context)
    finished, keys = init.finish(resp.respond(init.hello()))
    return SecureChannel(keys, role="initiator"), SecureChannel(resp.finish(finished), role="responder")


def _interleaved(pairs: Sequence[tuple[Callable[[], object], Callable[[], object]]]) -> tuple[float, float]:
    """Seconds spent in each side of every pair, timed call by call, alternating which side goes first."""
    spent = [0.0, 0.0]
    for i, pair in enumerate(pairs):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for side in order:
            t0 = time.perf_counter()
            pair[side]()
            spent[side] += time.perf_counter() - t0
    return spent[0], spent[1]


def _timed(step: Callable[[], object], count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        step()
    return time.perf_counter() - t0


def bench_size(size: int, repeats: int, sample_bytes: int) -> dict[str, Any]:
    """Median MB/s of every method for frames of `size` bytes."""
    import numpy as np
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from fabric.secure import metadata_aad, sealed_bytes
    from fabric.wire import BatchHeader

    buf = np.random.default_rng(size).bytes(size)
    aad = metadata_aad(BatchHeader(vm="bench", epoch=1, round=0, seq=0).to_metadata())
    count = max(1, sample_bytes // size)  # frames per sample
    raw = AESGCM(AESGCM.generate_key(bit_length=256))
    raw_out = bytearray(size + 16)
    frame_out = bytearray(sealed_bytes(size))
    raw_ct = raw.encrypt(bytes(12), buf, aad)
    source, destination = _channels()
    into_source, _ = _channels()  # its frames are never opened: keep them off the window of `source`
    nonce_counter = iter(range(2**63))
    # Every output of a sample is kept until the sample ends, raw or sealed alike, as a
    # sender keeps its frames in flight: both sides pay the same for fresh memory.
    kept: list[Any] = []
    frames: list[bytearray] = []

    def raw_encrypt() -> None:
        kept.append(raw.encrypt(next(nonce_counter).to_bytes(12, "big"), buf, aad))

    def seal() -> None:
        frames.append(source.seal(buf, aad))

    def raw_encrypt_into() -> None:
        raw.encrypt_into(next(nonce_counter).to_bytes(12, "big"), buf, aad, raw_out)

    def seal_into() -> None:
        into_source.seal_into(buf, aad, frame_out)

    def raw_decrypt() -> None:
        raw.decrypt(bytes(12), raw_ct, aad)

    def seal_into_numpy() -> None:
        out = np.empty(sealed_bytes(size), dtype=np.uint8)
        into_source.seal_into(buf, aad, out)
        kept.append(out)

    def frame_alloc() -> None:
        kept.append(bytearray(sealed_bytes(size)))

    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(repeats + 1):  # the first round warms up the library and the allocator
        got: dict[str, float] = {}
        kept.clear()
        frames.clear()
        got["raw_encrypt"], got["seal"] = _interleaved([(raw_encrypt, seal)] * count)
        opens = [(raw_decrypt, functools.partial(destination.open, f, aad)) for f in frames]
        got["raw_decrypt"], got["open"] = _interleaved(opens)
        kept.clear()
        frames.clear()
        got["raw_encrypt_into"], got["seal_into"] = _interleaved([(raw_encrypt_into, seal_into)] * count)
        got["seal_into_numpy"] = _timed(seal_into_numpy, count)
        kept.clear()
        got["frame_alloc"] = _timed(frame_alloc, count)
        if r:
            for m in METHODS:
                seconds[m].append(got[m])
    samples = {m: [count * size / t / MB for t in seconds[m]] for m in METHODS}
    median = {m: statistics.median(samples[m]) for m in METHODS}
    return {
        "size_bytes": size, "frames_per_sample": count, "median_mbps": median,
        "seal_vs_raw_encrypt": median["seal"] / median["raw_encrypt"],
        "seal_into_vs_raw_encrypt_into": median["seal_into"] / median["raw_encrypt_into"],
        "seal_into_numpy_vs_raw_encrypt": median["seal_into_numpy"] / median["raw_encrypt"],
        "open_vs_raw_decrypt": median["open"] / median["raw_decrypt"],
        "samples_mbps": samples,
    }


def run(sizes: Sequence[int] = SIZES_BYTES, repeats: int = REPEATS,
        sample_bytes: int = SAMPLE_BYTES) -> dict[str, Any]:
    """Measure every size; a JSON-ready dict."""
    if not sizes or any(s < 1 for s in sizes) or repeats < 1 or sample_bytes < 1:
        raise ValueError("sizes must be positive byte counts, repeats and sample_bytes at least 1")
    import cryptography

    from fabric.secure import PLAINTEXT_BYTES_MAX

    too_big = [s for s in sizes if s > PLAINTEXT_BYTES_MAX]
    if too_big:
        raise ValueError(f"sizes {too_big} are over the frame limit of {PLAINTEXT_BYTES_MAX} bytes")
    return {
        "benchmark": "bench_secure",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "cryptography": cryptography.__version__},
        "repeats": repeats, "sample_bytes": sample_bytes,
        "copies": "seal: no copy of the payload (encrypt_into writes into the new frame), plus the "
                  "zero fill of that frame (see frame_alloc); seal_into a reused buffer: neither; "
                  "open: none (decrypt reads a view of the frame); all copy the small header + aad "
                  "into the AEAD's associated data",
        "results": [bench_size(s, repeats, sample_bytes) for s in sizes],
    }


def table_text(out: dict[str, Any]) -> str:
    """The benchmark's result as a table."""
    from jobs.render import table

    rows = []
    for r in out["results"]:
        m = r["median_mbps"]
        rows.append([f"{r['size_bytes'] >> 10} KiB", m["raw_encrypt"], m["seal"], r["seal_vs_raw_encrypt"],
                     m["seal_into_numpy"], m["raw_encrypt_into"], m["seal_into"],
                     r["seal_into_vs_raw_encrypt_into"], m["raw_decrypt"], m["open"],
                     r["open_vs_raw_decrypt"], m["frame_alloc"]])
    return table(rows, ["frame", "raw encrypt", "seal", "ratio", "seal_into np.empty", "raw encrypt_into",
                        "seal_into", "ratio", "raw decrypt", "open", "ratio", "frame alloc"])


def parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(prog="bench_secure", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES_BYTES), metavar="BYTES",
                   help="frame plaintext sizes (default 64 KiB, 1 MiB, 16 MiB)")
    p.add_argument("--repeats", type=int, default=REPEATS, help=f"samples per method (default {REPEATS})")
    p.add_argument("--sample-mib", type=int, default=SAMPLE_BYTES >> 20,
                   help=f"MiB per timed sample (default {SAMPLE_BYTES >> 20})")
    p.add_argument("--out", default="out/bench_secure.json", help="where to write the JSON ('' for nowhere)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout and nothing else there")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parser().parse_args(argv)

    try:
        out = run(args.sizes, args.repeats, args.sample_mib << 20)
    except ValueError as e:
        return fail(str(e), json_mode=args.json)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    if args.json:
        emit_json(out)
        return EXIT_OK
    print(table_text(out))
    print(f"\nMB/s, medians of {out['repeats']} samples of {args.sample_mib} MiB each; cryptography "
          f"{out['machine']['cryptography']}, {out['machine']['cpus']} CPUs (shared: numbers are "
          f"preliminary)\ncopies: {out['copies']}")
    if args.out:
        print(f"JSON: {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
