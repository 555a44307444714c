"""PageStore: every write path marks pages dirty, bumps generations and keeps the digest honest."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fabric.errors import ConfigError
from fabric.memory import PAGE_SIZE, PageStore


def pages_of(value: int, n: int) -> np.ndarray:
    return np.full((n, PAGE_SIZE), value, dtype=np.uint8)


def test_geometry_is_bounded() -> None:
    assert PageStore(16).nbytes == 16 * PAGE_SIZE
    with pytest.raises(ConfigError):
        PageStore(0)


@pytest.mark.parametrize("path", ["pages", "records", "bytes", "image"])
def test_every_write_path_sets_dirty_generation_and_digest(path: str) -> None:
    store = PageStore(8)
    before = store.digest()
    gen = store.generations(np.arange(8))
    if path == "pages":
        store.write_pages(np.array([2, 5]), pages_of(7, 2))
        expected = [2, 5]
    elif path == "records":
        store.write_records(np.array([3]), np.array([128]), np.full((1, 64), 9, np.uint8))
        expected = [3]
    elif path == "bytes":
        store.write_bytes(PAGE_SIZE - 2, b"abcd")  # spans pages 0 and 1
        expected = [0, 1]
    else:
        store.load_image(pages_of(1, 8))
        expected = list(range(8))
    assert store.take_dirty().tolist() == expected
    assert store.take_dirty().size == 0  # cleared atomically
    changed = np.flatnonzero(store.generations(np.arange(8)) != gen).tolist()
    assert changed == expected
    assert store.digest() != before
    assert store.digest() == store.full_digest()


def test_write_bytes_lands_at_the_address() -> None:
    store = PageStore(2)
    store.write_bytes(PAGE_SIZE - 1, b"xy")
    assert store.read(np.array([0]))[0, -1] == ord("x")
    assert store.read(np.array([1]))[0, 0] == ord("y")
    with pytest.raises(ValueError):
        store.write_bytes(2 * PAGE_SIZE - 1, b"zz")


def test_out_of_range_and_bad_shapes_are_refused() -> None:
    store = PageStore(4)
    with pytest.raises(IndexError):
        store.write_pages(np.array([4]), pages_of(1, 1))
    with pytest.raises(ValueError):
        store.write_pages(np.array([0]), pages_of(1, 2))
    with pytest.raises(ValueError):
        store.write_records(np.array([0]), np.array([PAGE_SIZE - 10]), np.zeros((1, 64), np.uint8))


def test_digest_is_of_content_not_history() -> None:
    a, b = PageStore(4), PageStore(4)
    a.write_pages(np.array([1]), pages_of(3, 1))
    a.write_pages(np.array([1]), pages_of(0, 1))  # back to zero
    assert a.digest() == b.digest()
    b.write_bytes(0, b"\x01")
    assert a.digest() != b.digest()


def test_snapshot_for_send_hashes_match_content_and_refresh_cache() -> None:
    store = PageStore(6)
    store.load_image(np.random.default_rng(0).integers(0, 256, (6, PAGE_SIZE), dtype=np.uint8))
    contents, hashes = store.snapshot_for_send(np.array([0, 3]))
    assert np.array_equal(contents, store.read(np.array([0, 3])))
    from fabric.memory import page_hashes
    assert np.array_equal(hashes, page_hashes(contents))
    assert store.digest() == store.full_digest()


def test_nonzero_scan_caches_zero_hashes_without_masking_writes() -> None:
    store = PageStore(5)
    store.load_image(np.zeros((5, PAGE_SIZE), np.uint8))
    store.write_pages(np.array([2]), pages_of(4, 1))
    assert store.nonzero_pages().tolist() == [2]
    assert store.digest() == store.full_digest()
    store.write_pages(np.array([4]), pages_of(6, 1))  # after the scan: must not read as zero
    assert store.digest() == store.full_digest()


def test_received_pages_keep_their_verified_hashes() -> None:
    src, dst = PageStore(4), PageStore(4)
    src.load_image(np.random.default_rng(1).integers(0, 256, (4, PAGE_SIZE), dtype=np.uint8))
    idx = np.arange(4)
    contents, hashes = src.snapshot_for_send(idx)
    dst.apply_received(idx, contents, hashes)
    assert dst.take_dirty().size == 0  # arriving pages are not guest writes
    assert dst.digest() == src.digest() == dst.full_digest()


def test_concurrent_writer_never_loses_an_update() -> None:
    """A writer thread races take_dirty + copy; the copy converges to the source once it stops."""
    store = PageStore(256)
    mirror = np.zeros((256, PAGE_SIZE), np.uint8)
    stop = threading.Event()

    def writer() -> None:
        rng = np.random.default_rng(2)
        while not stop.is_set():
            idx = rng.integers(0, 256, 16)
            records = rng.integers(0, 256, (16, 128), dtype=np.uint8)
            store.write_records(idx, rng.integers(0, 32, 16) * 128, records)

    t = threading.Thread(target=writer)
    t.start()
    for _ in range(200):
        idx = store.take_dirty()
        if idx.size:
            mirror[idx], _ = store.snapshot_for_send(idx)
    stop.set()
    t.join()
    idx = store.take_dirty()
    mirror[idx], _ = store.snapshot_for_send(idx)
    assert np.array_equal(mirror, store.view())
    assert store.digest() == store.full_digest()
