"""XBZRLE-style page deltas, vectorised over a whole batch.

A delta describes a page by where it differs from the destination's current
copy of that same page (QEMU's XBZRLE): runs of changed bytes separated by
runs of unchanged ones. Unlike QEMU's interleaved form, all run lengths come
first and all changed bytes after, so both ends encode and decode a batch with
a few numpy passes instead of a loop over bytes.

Payload layout:
    u16 (little-endian)   run count c, 0..RUNS_MAX; 0 means "unchanged"
    2c ULEB128 varints     (unchanged, changed) byte counts of each run, 1..2 bytes each
    the changed bytes      of every run in order, taken from the new page (as QEMU does)
A run starts `unchanged` bytes after the previous run's end (or the page
start), holds `changed` >= 1 bytes and ends inside the page.

Runs are found on 8-byte words, then trimmed to their first and last changed
byte (QEMU compares longs too): equal bytes inside a changed word travel as
changed bytes, which costs little and keeps the run count low.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from fabric.codec.errors import DeltaError
from fabric.memory.layout import PAGE_SIZE

WORD_BYTES = 8
PAGE_WORDS = PAGE_SIZE // WORD_BYTES
PAGE_WORDS_LOG2 = PAGE_WORDS.bit_length() - 1
COUNT_BYTES = 2  # the u16 run count
RUNS_MAX = PAGE_SIZE // 2  # runs are at least one byte apart, so a page holds at most this many
VARINT_BYTES_MAX = 2  # run lengths are <= PAGE_SIZE < 2**14
assert sys.byteorder == "little", "run trimming reads bytes of uint64 words in little-endian order"


@dataclass(frozen=True, eq=False)
class DeltaPlan:
    """Where each of m pages differs from its base: the runs, and each page's payload size."""

    run_page: np.ndarray  # int64, page (0..m-1) of each run; runs are in page order, then offset order
    run_start: np.ndarray  # int64, first changed byte of the run within its page
    run_end: np.ndarray  # int64, one past the last changed byte
    sizes: np.ndarray  # int64 (m,), payload bytes of each page's delta


def _varint_bytes(v: np.ndarray) -> np.ndarray:
    return 1 + (v >= 0x80).astype(np.int64)


def _exclusive_cumsum(a: np.ndarray) -> np.ndarray:
    out = np.zeros(a.size, dtype=np.int64)
    if a.size > 1:
        np.cumsum(a[:-1], out=out[1:])
    return out


def plan_deltas(new: np.ndarray, base: np.ndarray) -> DeltaPlan:
    """Runs where (m, 4096) pages `new` differ from `base`, and the payload size of each delta."""
    assert new.shape == base.shape and new.ndim == 2 and new.shape[1] == PAGE_SIZE
    assert new.dtype == np.uint8 and base.dtype == np.uint8
    assert new.flags.c_contiguous and base.flags.c_contiguous
    m = new.shape[0]
    new64, base64 = new.reshape(-1).view(np.uint64), base.reshape(-1).view(np.uint64)
    words = np.flatnonzero(new64 != base64)  # changed words, as global word numbers
    # A run of changed words ends where the next changed word is not adjacent or starts a page.
    ends = np.flatnonzero((np.diff(words) != 1) | ((words[1:] & (PAGE_WORDS - 1)) == 0))
    word_first = words[np.concatenate(([0], ends + 1))] if words.size else words
    word_last = words[np.concatenate((ends, [words.size - 1]))] if words.size else words
    run_page = word_first >> PAGE_WORDS_LOG2
    # Trim each run to its first and last changed byte.
    run_start = (word_first & (PAGE_WORDS - 1)) * WORD_BYTES + _zero_low_bytes(
        new64[word_first] ^ base64[word_first])
    run_end = ((word_last & (PAGE_WORDS - 1)) + 1) * WORD_BYTES - _zero_high_bytes(
        new64[word_last] ^ base64[word_last])
    unchanged = _unchanged_before(run_page, run_start, run_end)
    per_run = _varint_bytes(unchanged) + _varint_bytes(run_end - run_start) + (run_end - run_start)
    sizes = COUNT_BYTES + np.bincount(run_page, weights=per_run, minlength=m).astype(np.int64)
    return DeltaPlan(run_page=run_page, run_start=run_start, run_end=run_end, sizes=sizes)


# Byte k of a uint64 in memory is bits 8k..8k+7 on a little-endian machine.
_BYTE_LIMITS = np.array([1 << (8 * k) for k in range(1, WORD_BYTES)], dtype=np.uint64)


def _zero_low_bytes(x: np.ndarray) -> np.ndarray:
    """Bytes before the first non-zero byte, in memory order, of non-zero words."""
    low_bit = x & (~x + np.uint64(1))  # the lowest set bit alone
    return np.searchsorted(_BYTE_LIMITS, low_bit, side="right").astype(np.int64)


def _zero_high_bytes(x: np.ndarray) -> np.ndarray:
    """Bytes after the last non-zero byte, in memory order, of non-zero words."""
    return WORD_BYTES - 1 - np.searchsorted(_BYTE_LIMITS, x, side="right").astype(np.int64)


def _unchanged_before(run_page: np.ndarray, run_start: np.ndarray, run_end: np.ndarray) -> np.ndarray:
    """Unchanged bytes between each run and the previous run of its page (or the page start)."""
    prev_end = np.zeros(run_start.size, dtype=np.int64)
    if run_start.size > 1:
        same = run_page[1:] == run_page[:-1]
        prev_end[1:] = np.where(same, run_end[:-1], 0)
    return run_start - prev_end


def emit_deltas(plan: DeltaPlan, new: np.ndarray, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The payloads of the picked pages' deltas: offsets (k+1,) int64 and the bytes they index."""
    assert pick.dtype == np.bool_ and pick.shape == plan.sizes.shape
    picked = np.flatnonzero(pick)
    k = picked.size
    sizes = plan.sizes[picked]
    offsets = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.uint8)
    keep = pick[plan.run_page]
    page = plan.run_page[keep]
    slot = (np.cumsum(pick) - 1)[page]  # position of the run's page among the picked ones
    start, end = plan.run_start[keep], plan.run_end[keep]
    changed = end - start
    counts = np.bincount(slot, minlength=k)
    assert counts.size == k and (k == 0 or int(counts.max()) <= RUNS_MAX)
    out[offsets[:-1]] = counts & 0xFF
    out[offsets[:-1] + 1] = counts >> 8
    # Varints, interleaved (unchanged, changed) per run, right after the count.
    values = np.empty(2 * start.size, dtype=np.int64)
    values[0::2] = _unchanged_before(page, start, end)
    values[1::2] = changed
    nbytes = _varint_bytes(values)
    vslot = np.repeat(slot, 2)
    header = np.bincount(vslot, weights=nbytes, minlength=k).astype(np.int64)
    pos = offsets[vslot] + COUNT_BYTES + _exclusive_cumsum(nbytes) - _exclusive_cumsum(header)[vslot]
    two = nbytes == 2
    out[pos] = (values & 0x7F) | np.where(two, 0x80, 0)
    out[pos[two] + 1] = values[two] >> 7
    # Changed bytes, after each page's header, copied from the new page.
    data_before = _exclusive_cumsum(changed) - _exclusive_cumsum(
        np.bincount(slot, weights=changed, minlength=k).astype(np.int64))[slot]
    dst = offsets[slot] + COUNT_BYTES + header[slot] + data_before
    src = page * PAGE_SIZE + start
    _copy_runs(out, dst, new.reshape(-1), src, changed)
    assert np.array_equal(np.diff(offsets), sizes)
    return offsets, out


def patch_pages(plan: DeltaPlan, new: np.ndarray, bases: np.ndarray, base_rows: np.ndarray) -> None:
    """Make bases[base_rows[i]] equal new[i] by copying only the planned runs (its changed bytes)."""
    assert base_rows.shape == plan.sizes.shape and bases.ndim == 2 and bases.shape[1] == PAGE_SIZE
    assert bases.flags.c_contiguous
    lengths = plan.run_end - plan.run_start
    _copy_runs(bases.reshape(-1), base_rows[plan.run_page] * PAGE_SIZE + plan.run_start, new.reshape(-1),
               plan.run_page * PAGE_SIZE + plan.run_start, lengths)


def _copy_runs(out: np.ndarray, dst: np.ndarray, src_flat: np.ndarray, src: np.ndarray,
               lengths: np.ndarray) -> None:
    """out[dst[i]:dst[i]+lengths[i]] = src_flat[src[i]:src[i]+lengths[i]] for every run i."""
    total = int(lengths.sum())
    if total == 0:
        return
    before = _exclusive_cumsum(lengths)
    step = np.arange(total, dtype=np.int64)
    out[np.repeat(dst - before, lengths) + step] = src_flat[np.repeat(src - before, lengths) + step]


def apply_deltas(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, pages: np.ndarray) -> None:
    """Turn (k, 4096) `pages`, the bases, into the new pages that payloads data[starts[i]:ends[i]] say.

    Everything is parsed and checked before the first byte of `pages` changes; DeltaError names
    the first problem.
    """
    bases = pages
    k = starts.size
    assert ends.shape == (k,) and bases.shape == (k, PAGE_SIZE) and bases.dtype == np.uint8
    sizes = ends - starts
    if k == 0:
        return
    if np.any(sizes < COUNT_BYTES):
        raise DeltaError(f"a DELTA payload of {int(sizes.min())} bytes cannot hold its run count")
    # The payloads as one compact buffer q, page i at q[q0[i]:q1[i]].
    if np.array_equal(starts[1:], ends[:-1]):
        q = data[int(starts[0]):int(ends[-1])]
    else:
        total = int(sizes.sum())
        q = data[np.repeat(starts - _exclusive_cumsum(sizes), sizes) + np.arange(total, dtype=np.int64)]
    q0 = _exclusive_cumsum(sizes)
    q1 = q0 + sizes
    counts = q[q0].astype(np.int64) | (q[q0 + 1].astype(np.int64) << 8)
    if int(counts.max()) > RUNS_MAX:
        raise DeltaError(f"DELTA of page {int(np.argmax(counts))} in the batch claims "
                         f"{int(counts.max())} runs, at most {RUNS_MAX}")
    # Varints end at bytes < 0x80; page i's 2c varints end at the 2c terminators after its count.
    terminators = np.flatnonzero(q < 0x80)
    head = q0 + COUNT_BYTES
    first_term = np.searchsorted(terminators, head)
    need = 2 * counts
    if np.any(first_term + need > terminators.size):
        raise DeltaError("a DELTA payload ends inside its run lengths")
    last_term = terminators[np.minimum(first_term + need - 1, terminators.size - 1)] if terminators.size \
        else np.zeros(k, dtype=np.int64)
    header_end = np.where(need > 0, last_term + 1, head)
    if np.any(header_end > q1):
        raise DeltaError("a DELTA payload's run lengths overrun the payload")
    nvalues = int(need.sum())
    vpage = np.repeat(np.arange(k, dtype=np.int64), need)
    local = np.arange(nvalues, dtype=np.int64) - np.repeat(_exclusive_cumsum(need), need)
    t = first_term[vpage] + local
    end_pos = terminators[t]
    start_pos = np.where(local == 0, head[vpage], terminators[np.maximum(t - 1, 0)] + 1)
    width = end_pos - start_pos + 1
    if np.any(width > VARINT_BYTES_MAX):
        raise DeltaError(f"a DELTA run length takes more than {VARINT_BYTES_MAX} bytes")
    lo = q[start_pos].astype(np.int64)
    values = np.where(width == 1, lo, (lo & 0x7F) | (q[end_pos].astype(np.int64) << 7))
    unchanged, changed = values[0::2], values[1::2]
    run_page = vpage[0::2]
    if np.any(changed < 1):
        raise DeltaError("a DELTA run changes no byte")
    if np.any(values > PAGE_SIZE):
        raise DeltaError("a DELTA run length exceeds the page")
    steps = unchanged + changed
    run_end = np.cumsum(steps) - np.repeat(_exclusive_cumsum(
        np.bincount(run_page, weights=steps, minlength=k).astype(np.int64)), counts)
    if np.any(run_end > PAGE_SIZE):
        raise DeltaError("a DELTA run overruns its page")
    data_bytes = np.bincount(run_page, weights=changed, minlength=k).astype(np.int64)
    if not np.array_equal(header_end + data_bytes, q1):
        bad = int(np.flatnonzero(header_end + data_bytes != q1)[0])
        raise DeltaError(f"DELTA payload {bad} of the batch is {int(sizes[bad])} bytes, its runs "
                         f"account for {int(header_end[bad] + data_bytes[bad] - q0[bad])}")
    run_start = run_end - changed
    src = header_end[run_page] + _exclusive_cumsum(changed) - _exclusive_cumsum(data_bytes)[run_page]
    assert bases.flags.c_contiguous
    _copy_runs(bases.reshape(-1), run_page * PAGE_SIZE + run_start, q, src, changed)
