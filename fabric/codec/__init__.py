"""HDE, the lossless page codec: what travels in a page batch, and how it is rebuilt.

Sender, one per outgoing migration::

    encoder = PageEncoder(pages=memory.pages, profile=PROFILES["datacenter"])
    encoder.add_destination_holdings(keys)        # optional: content the destination node holds
    encoded = encoder.encode(header, idx, contents, hashes, link_bytes_per_s=125e6)  # None: unknown
    ...send encoded.batch (EncodedBatch: batch, raw_bytes, wire_bytes, encode_s, pages_by_encoding)...
    encoder.forget(applied.missing)               # pages the destination reported missing
    encoder.set_profile(PROFILES["internet"])     # when the link changes mode
    encoder.stats()                               # JSON-ready: per encoding, per stage, selector

Receiver, one per incoming migration::

    decoder = PageDecoder(memory=incoming, holdings=[other_vm.memory, ...])
    keys = decoder.holdings_keys()                # content_keys of the holdings: advertise to the sender
    applied = decoder.apply(batch)                # in sequence order; AppliedBatch(header, pages,
                                                  # raw_bytes, missing); typed errors write nothing

Per batch: zero pages become ZERO rows; content the destination holds becomes
a REF carrying its 16-byte xxh3-128 key (content sent earlier in this
migration, an earlier row of the batch, or a holding of the destination node),
verified by key and checksum on arrival; a page re-sent while its last-sent
copy is in the bounded delta cache (64 MiB by default, filled from round 1 on,
as QEMU does) becomes an XBZRLE-style DELTA when that is smaller; the rest goes
in zstd frames of 64 KiB..1 MiB at a level the adaptive selector picks, with
an optional dictionary trained on the VM's own pages, or raw. The selector
maximises min(link x ratio, codec speed) from measured, smoothed ratios and
speeds (codec speed alone when the link rate is None), probes other choices on
a slice of a seeded fraction of batches, and so ends at raw for incompressible
pages; `choose` is its decision as a pure function.

State sync: both ends keep a `ContentIndex` (xxh3-64 checksum -> page) and
update it with the same rule, in the batch's row order, batch after batch in
sequence order (the decoder refuses any other order). The sender therefore
never believes the destination holds more than it does, except for pages the
decoder reports `missing` (a REF it could not resolve, e.g. a holding that
changed): those are not written, and `forget` makes the sender drop them, and
the content they referenced, from its state, so the resend goes in full. DELTA
decodes against the destination's current page, which only this migration
writes, so the receiver needs no delta cache; the sender's cache holds exactly
what the destination holds for each cached page.

Errors, all `MalformedBatchError` subclasses raised before any write:
`FrameError`, `DeltaError`, `DictionaryError`, `SequenceError`; a page that
fails its checksum after decoding raises `CorruptPageError`. Structural checks
(schema, sizes, framing) live in `fabric.wire.check_batch`.
"""

from fabric.codec.decoder import AppliedBatch, PageDecoder
from fabric.codec.encoder import EncodedBatch, PageEncoder
from fabric.codec.errors import DeltaError, DictionaryError, FrameError, SequenceError
from fabric.codec.keys import content_keys
from fabric.codec.profiles import PROFILES, CodecProfile
from fabric.codec.selector import FrameChoice, Prediction, choose, effective_rate

__all__ = [
    "PROFILES", "AppliedBatch", "CodecProfile", "DeltaError", "DictionaryError", "EncodedBatch",
    "FrameChoice", "FrameError", "PageDecoder", "PageEncoder", "Prediction", "SequenceError", "choose",
    "content_keys", "effective_rate",
]
