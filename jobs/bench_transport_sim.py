"""Benchmark (simulation only): AMST over emulated WAN links, in virtual time, no Ray.

    python jobs/bench_transport_sim.py                    # utilisation table, 4 s transfers
    python jobs/bench_transport_sim.py --seconds 8 --json
    python jobs/bench_transport_sim.py --sweep-gain       # how cwnd_gain was chosen
    python jobs/bench_transport_sim.py --sweep-predictor  # how the predictor's alpha/beta were chosen

Every figure is virtual time from `fabric.transport.simulate`: the sender,
the emulated link (bandwidth, RTT, jitter, loss, a 50 ms queue) and the
receiver, deterministic for a seed. Utilisation is payload bytes delivered
over (last delivery - first departure) x link rate: the probe round trip at
the start and the last one-way delay count against it. Wall time on the
real transport is a separate question (the Ray shell).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabric.transport import (
    DEFAULT_LINKS,
    INTRA_DC_LINK,
    BandwidthPredictor,
    LinkSpec,
    TransportConfig,
    simulate,
)

MiB = 1 << 20
MESSAGE_BYTES = 16 * MiB  # a full batch of 4096 raw pages
RATES_BPS = (1e9, 10e9)
RTTS_S = (0.0002, 0.050, 0.150)
WAN_JITTER_S = 0.001
WAN_LOSS = 1e-4
GAINS = (1.0, 1.1, 1.25, 1.5, 2.0)
ALPHAS = (0.2, 0.3, 0.5, 0.7, 1.0)
BETAS = (0.0, 0.1, 0.2, 0.4)


def parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(prog="bench_transport_sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4.0, help="transfer length at the link rate (default 4)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per case (median reported, default 3)")
    p.add_argument("--loss", type=float, default=WAN_LOSS, help=f"per-chunk loss on WAN links ({WAN_LOSS})")
    p.add_argument("--sweep-gain", action="store_true", help="utilisation and drops per cwnd_gain")
    p.add_argument("--sweep-predictor", action="store_true", help="prediction error per alpha/beta")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p


def link_for(rate_bps: float, rtt_s: float, loss: float) -> LinkSpec:
    """A WAN link, or the intra-DC one's jitter at sub-millisecond RTT."""
    if rtt_s < 0.001:
        return LinkSpec(bandwidth_bps=rate_bps, rtt_s=rtt_s, jitter_s=INTRA_DC_LINK.jitter_s)
    return LinkSpec(bandwidth_bps=rate_bps, rtt_s=rtt_s, jitter_s=WAN_JITTER_S, loss=loss)


def transfer(link: LinkSpec, seconds: float, seed: int, config: TransportConfig | None = None,
             **kwargs: Any) -> dict[str, Any]:
    """One transfer of `seconds` at the link rate, in 16 MiB messages; headline figures."""
    blob = bytes(MESSAGE_BYTES)
    n = max(1, round(link.bandwidth_bytes_per_s * seconds / MESSAGE_BYTES))
    t0 = time.perf_counter()
    res = simulate(link, [blob] * n, config=config, seed=seed, verify=False, **kwargs)
    s = res.sender_stats
    assert s is not None
    return {"complete": res.complete, "utilisation": res.utilisation,
            "link_busy_fraction": res.link_busy_fraction, "duration_s": res.duration_s,
            "bytes": res.bytes_delivered, "retransmitted_chunks": s.chunks_retransmitted,
            "queue_drops": res.link_counters["dropped_queue"], "rto_expiries": s.rto_expiries,
            "bandwidth_estimate_bps": (s.bandwidth_bytes_per_s or 0) * 8, "rtt_estimate_s": s.rtt_s,
            "mode": s.mode, "inflight_bytes_peak": res.inflight_bytes_peak,
            "receiver_held_bytes_peak": res.receiver_held_bytes_peak,
            "wall_s": time.perf_counter() - t0, "precopy_rounds": res.precopy_rounds}


def median_case(link: LinkSpec, seconds: float, seeds: int, config: TransportConfig | None = None,
                **kwargs: Any) -> dict[str, Any]:
    """The run with the median utilisation over `seeds` seeds, plus the min and max."""
    runs = sorted((transfer(link, seconds, seed, config, **kwargs) for seed in range(seeds)),
                  key=lambda r: r["utilisation"])
    out = dict(runs[len(runs) // 2])
    out["utilisation_min"], out["utilisation_max"] = runs[0]["utilisation"], runs[-1]["utilisation"]
    out["link"] = link.to_dict()
    out.pop("precopy_rounds")
    return out


def utilisation_table(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every rate x RTT case, then the embedded default's links."""
    rows = []
    for rate, rtt in itertools.product(RATES_BPS, RTTS_S):
        rows.append({"case": f"{rate / 1e9:g} Gbit/s, RTT {rtt * 1e3:g} ms",
                     **median_case(link_for(rate, rtt, args.loss), args.seconds, args.seeds)})
    for pair, spec in DEFAULT_LINKS.items():
        rows.append({"case": "default " + " <-> ".join(sorted(pair)),
                     **median_case(spec, args.seconds, args.seeds)})
    return rows


def sweep_gain(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Utilisation, queue drops and retransmissions per cwnd_gain (1% loss adds a lossy case)."""
    rows = []
    for gain in GAINS:
        config = replace(TransportConfig(), cwnd_gain=gain).validate()
        for rate, rtt, loss in itertools.product(RATES_BPS, RTTS_S[1:], (args.loss, 0.01)):
            r = median_case(link_for(rate, rtt, loss), args.seconds, args.seeds, config)
            rows.append({"cwnd_gain": gain, "case": f"{rate / 1e9:g} Gbit/s, RTT {rtt * 1e3:g} ms, "
                         f"loss {loss:g}", **r})
    return rows


def precopy_rounds(link: LinkSpec, first_mib: int, ratio: float, rounds: int, seed: int,
                   schedule: tuple[tuple[float, float], ...] = ()) -> list[dict[str, float]]:
    """Per-round bytes and durations of a pre-copy-like transfer (each round `ratio` x the last)."""
    blob = bytes(MESSAGE_BYTES)
    sizes = [max(1, round(first_mib * ratio ** k * MiB / MESSAGE_BYTES)) for k in range(rounds)]
    res = simulate(link, [blob] * sum(sizes), rounds=sizes, seed=seed, verify=False,
                   bandwidth_schedule=schedule)
    assert res.complete, res.summary()
    rtt = res.sender_stats.rtt_s if res.sender_stats else 0.0
    return [{**r, "rtt_s": rtt or 0.0} for r in res.precopy_rounds]


def sweep_predictor(args: argparse.Namespace) -> dict[str, Any]:
    """Mean relative error of next-round predictions per (alpha, beta), over several scenarios."""
    eu = DEFAULT_LINKS[frozenset({"us-east", "eu-west"})]
    far = DEFAULT_LINKS[frozenset({"us-west", "eu-west"})]
    scenarios = {
        "us-east<->eu-west, dirty ratio 0.5": precopy_rounds(eu, 1024, 0.5, 8, 1),
        "us-east<->eu-west, dirty ratio 0.8": precopy_rounds(eu, 512, 0.8, 10, 2),
        "us-west<->eu-west, dirty ratio 0.7": precopy_rounds(far, 512, 0.7, 10, 3),
        "10 Gbit/s 150 ms, dirty ratio 0.6": precopy_rounds(link_for(10e9, 0.15, args.loss), 4096, 0.6,
                                                             10, 4),
        "2 -> 1 Gbit/s at 2 s (cross traffic)": precopy_rounds(eu, 512, 0.8, 10, 5, ((2.0, 1e9),)),
        "2 Gbit/s falling 20% per second": precopy_rounds(
            eu, 512, 0.85, 12, 6, tuple((float(k), 2e9 * 0.8 ** k) for k in range(1, 8))),
    }
    table = []
    for alpha, beta in itertools.product(ALPHAS, BETAS):
        errs = {}
        for name, rounds in scenarios.items():
            pred = BandwidthPredictor(alpha=alpha, beta=beta)
            for r in rounds:
                pred.observe(int(r["bytes"]), r["duration_s"], r["rtt_s"])
            errs[name] = statistics.fmean(pred.errors)
        table.append({"alpha": alpha, "beta": beta, "mean_error": statistics.fmean(errs.values()),
                      "per_scenario": errs})
    table.sort(key=lambda row: row["mean_error"])
    best = table[0]
    no_rtt = {}  # the best pair without the round-trip term: is the size model worth it?
    for name, rounds in scenarios.items():
        pred = BandwidthPredictor(alpha=best["alpha"], beta=best["beta"])
        for r in rounds:
            pred.observe(int(r["bytes"]), r["duration_s"], 0.0)
        no_rtt[name] = statistics.fmean(pred.errors)
    return {"best": best, "table": table,
            "best_without_rtt_model": {"mean_error": statistics.fmean(no_rtt.values()),
                                       "per_scenario": no_rtt},
            "rounds": {k: [(int(r["bytes"]), round(r["duration_s"], 4)) for r in v]
                       for k, v in scenarios.items()}}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmark and print a table or one JSON object."""
    args = parser().parse_args(argv)
    if args.sweep_predictor:
        result: Any = {"predictor": sweep_predictor(args)}
    elif args.sweep_gain:
        result = {"gain": sweep_gain(args)}
    else:
        result = {"utilisation": utilisation_table(args)}
    result["seconds"], result["seeds"] = args.seconds, args.seeds
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    if "predictor" in result:
        best = result["predictor"]["best"]
        print(f"best alpha={best['alpha']} beta={best['beta']} mean error {best['mean_error']:.3%}")
        flat = result["predictor"]["best_without_rtt_model"]
        print(f"  same without the RTT term: mean {flat['mean_error']:.3%}  " +
              "  ".join(f"{v:.1%}" for v in flat["per_scenario"].values()))
        for row in result["predictor"]["table"]:
            print(f"  alpha={row['alpha']:<4} beta={row['beta']:<4} mean {row['mean_error']:.3%}  " +
                  "  ".join(f"{v:.1%}" for v in row["per_scenario"].values()))
        return 0
    rows = result.get("utilisation") or result["gain"]
    for r in rows:
        prefix = f"gain {r['cwnd_gain']:<5} " if "cwnd_gain" in r else ""
        print(f"{prefix}{r['case']:<42} util {r['utilisation']:.3f} "
              f"[{r['utilisation_min']:.3f}-{r['utilisation_max']:.3f}] busy {r['link_busy_fraction']:.3f} "
              f"retx {r['retransmitted_chunks']:<4} drops {r['queue_drops']:<4} "
              f"bw {r['bandwidth_estimate_bps'] / 1e9:.3f} Gb/s "
              f"rtt {(r['rtt_estimate_s'] or 0) * 1e3:.2f} ms "
              f"mode {r['mode']} wall {r['wall_s']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
