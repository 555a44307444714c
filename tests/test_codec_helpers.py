"""Shared helpers of the codec tests (no tests here): a source memory, an encoder and a decoder in step."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from fabric.codec import AppliedBatch, CodecProfile, EncodedBatch, FrameChoice, PageDecoder, PageEncoder
from fabric.memory import PAGE_SIZE, PageStore
from fabric.wire import BatchHeader, build_batch, check_batch


def profile(name: str = "test", *, levels: tuple[int, ...] = (1,), delta: bool = True, dedup: bool = True,
            dictionary: bool = False, frame_bytes: int = 64 << 10, explore_fraction: float = 0.0,
            **kw: object) -> CodecProfile:
    """A codec profile for tests (small frames, no exploration unless asked)."""
    return CodecProfile(name=name, zstd_levels=levels, delta=delta, dedup=dedup, dictionary=dictionary,
                        frame_bytes=frame_bytes, explore_fraction=explore_fraction, **kw)  # type: ignore[arg-type]


@dataclass
class Session:
    """A source memory and the encoder/decoder pair of one migration of it."""

    source: PageStore
    encoder: PageEncoder
    decoder: PageDecoder
    seq: int = 0
    round: int = 0
    sent: list[EncodedBatch] = field(default_factory=list)

    @classmethod
    def new(cls, pages: int, prof: CodecProfile, *, holdings: list[PageStore] | None = None,
            frame_choice: FrameChoice | None = None, **encoder_kw: object) -> Session:
        """A fresh session over an all-zero source of `pages` pages."""
        return cls(source=PageStore(pages),
                   encoder=PageEncoder(pages=pages, profile=prof, frame_choice=frame_choice,
                                       **encoder_kw),  # type: ignore[arg-type]
                   decoder=PageDecoder(memory=PageStore(pages), holdings=holdings))

    def encode(self, idx: np.ndarray, *, link: float | None = None) -> EncodedBatch:
        """Encode the source's current pages `idx` as the next batch of the current round."""
        idx = np.asarray(idx, dtype=np.uint32)
        contents, hashes = self.source.snapshot_for_send(idx)
        e = self.encoder.encode(BatchHeader(vm="vm", epoch=1, round=self.round, seq=self.seq), idx, contents,
                                hashes, link_bytes_per_s=link)
        self.seq += 1
        self.sent.append(e)
        return e

    def send(self, idx: np.ndarray, *, link: float | None = None,
             batch_pages: int = 4096) -> list[AppliedBatch]:
        """Encode and apply `idx` in batches; report missing pages back to the encoder."""
        idx = np.asarray(idx, dtype=np.uint32)
        out = []
        for a in range(0, idx.size, batch_pages):
            applied = self.decoder.apply(self.encode(idx[a:a + batch_pages], link=link).batch)
            if applied.missing.size:
                self.encoder.forget(applied.missing)
            out.append(applied)
        return out

    def next_round(self) -> None:
        """Start the next pre-copy round."""
        self.round += 1

    def in_sync(self) -> bool:
        """The destination memory equals the source, byte for byte."""
        return bool(np.array_equal(self.decoder.memory.view(), self.source.view()))


def encodings_of(e: EncodedBatch) -> dict[int, str]:
    """page -> encoding name of each row of an encoded batch."""
    from fabric.wire import Encoding

    pages = e.batch.column("page").to_numpy().tolist()
    enc = e.batch.column("encoding").to_numpy().tolist()
    return {p: Encoding(v).name for p, v in zip(pages, enc, strict=True)}


def rebuild(batch: pa.RecordBatch, *, payloads: dict[int, bytes] | None = None,
            encodings: dict[int, int] | None = None, checksums: dict[int, int] | None = None,
            meta: dict[bytes, bytes | None] | None = None) -> pa.RecordBatch:
    """The batch with some rows' payload, encoding or checksum replaced (rows by index)."""
    wb = check_batch(batch, page_count=1 << 30)
    n = wb.rows
    parts = [wb.payload(r).tobytes() for r in range(n)]
    for r, p in (payloads or {}).items():
        parts[r] = p
    enc = wb.encoding.copy()
    for r, e in (encodings or {}).items():
        enc[r] = e
    cs = wb.checksums.copy()
    for r, c in (checksums or {}).items():
        cs[r] = c
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    data = np.frombuffer(b"".join(parts), dtype=np.uint8).copy() if offsets[-1] else np.empty(0, np.uint8)
    out = build_batch(wb.header, wb.idx.copy(), enc.astype(np.uint8), offsets, data, cs.astype(np.uint64),
                      dict_id=wb.dict_id, dictionary=wb.dictionary)
    if meta:
        merged = dict(out.schema.metadata)
        for k, v in meta.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        out = out.replace_schema_metadata(merged)
    return out


def adversarial_pages(rng: np.random.Generator) -> np.ndarray:
    """Pages that stress the codec: single bytes, alternating patterns, noise, duplicates, extremes."""
    pages = []
    for pos in (0, 1, 7, 8, 2047, 4088, 4095):
        p = np.zeros(PAGE_SIZE, np.uint8)
        p[pos] = 0x80 | pos % 127  # all zero but one byte (>= 0x80 to stress varint-like bytes)
        pages.append(p)
    pages.append(np.tile(np.array([0x55, 0xAA], np.uint8), PAGE_SIZE // 2))
    pages.append(np.tile(np.array([0x00, 0xFF], np.uint8), PAGE_SIZE // 2))
    pages.append(np.tile(np.array([0] * 8 + [0xFF] * 8, np.uint8), PAGE_SIZE // 16))
    pages.append(np.full(PAGE_SIZE, 0xFF, np.uint8))
    pages.append(np.full(PAGE_SIZE, 0x7F, np.uint8))
    pages.append(rng.integers(0, 256, PAGE_SIZE, dtype=np.uint8))  # compresses badly
    pages.append(rng.integers(0, 256, PAGE_SIZE, dtype=np.uint8))
    pages.append(pages[-1].copy())  # identical to another page
    pages.append(np.arange(PAGE_SIZE, dtype=np.uint16).view(np.uint8)[:PAGE_SIZE].copy())
    return np.stack(pages)


def mutate(rng: np.random.Generator, page: np.ndarray, kind: int) -> np.ndarray:
    """A re-sent version of a page: few bytes, every 8th byte, every byte, nothing, or its edges."""
    new = page.copy()
    if kind == 0:
        pos = rng.integers(0, PAGE_SIZE, size=int(rng.integers(1, 40)))
        new[pos] ^= rng.integers(1, 256, size=pos.size, dtype=np.uint8)
    elif kind == 1:
        new[::8] ^= 0x01  # a run per word: the most runs a delta holds
    elif kind == 2:
        new ^= 0xFF  # everything changed
    elif kind == 3:
        pass  # unchanged: a delta of a page to itself
    else:
        new[0] ^= 0x80
        new[-1] ^= 0x80
    return new
