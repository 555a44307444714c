"""A canonical byte encoding of message values, for signatures and digests.

Equal values give equal bytes on every process (no hash() order, no pickle
protocol differences): None, bools, ints, strs, bytes, tuples and lists,
frozensets and dicts (sorted by encoded key), and dataclasses (type name, then
fields in declaration order). Anything else is refused, so a peer cannot make
two replicas disagree on what was signed.

A value may define `__canonical__()` returning its own canonical bytes (signed
messages and requests do, caching them, so a view change that carries a
hundred signed messages does not re-encode each of them every time).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

from fabric.consensus.errors import MalformedMessageError

DEPTH_MAX = 32  # nesting of a NewView (view changes holding certificates) stays far below

_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        _FIELDS[cls] = names
    return names


def _enc(obj: Any, out: Callable[[bytes], Any], depth: int) -> None:
    if depth > DEPTH_MAX:
        raise MalformedMessageError("value nested too deeply to encode")
    t = type(obj)
    if obj is None:
        out(b"N")
    elif t is bool:
        out(b"T" if obj else b"F")
    elif t is int:
        out(b"i%d;" % obj)
    elif t is str:
        raw = obj.encode("utf-8")
        out(b"s%d:" % len(raw))
        out(raw)
    elif t is bytes:
        out(b"b%d:" % len(obj))
        out(obj)
    elif t is tuple or t is list:
        out(b"(%d:" % len(obj))
        depth += 1
        if depth > DEPTH_MAX:  # its items are too deep: _enc raises on the first
            for item in obj:
                _enc(item, out, depth)
            return
        for item in obj:
            # The common leaves written here, as _enc writes them: a call per int or digest
            # was most of the cost of encoding a message.
            ti = type(item)
            if ti is int:
                out(b"i%d;" % item)
            elif ti is bytes:
                out(b"b%d:" % len(item))
                out(item)
            else:
                _enc(item, out, depth)
    elif t is frozenset or t is set:
        items = sorted(encode(item) for item in obj)
        out(b"{%d:" % len(items))
        for raw in items:
            out(raw)
    elif t is dict:
        pairs = sorted((encode(k), v) for k, v in obj.items())
        out(b"<%d:" % len(pairs))
        for k, v in pairs:
            out(k)
            _enc(v, out, depth + 1)
    elif hasattr(t, "__canonical__"):
        raw = obj.__canonical__()
        out(b"C%d:" % len(raw))
        out(raw)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = t.__qualname__.encode()
        out(b"D%d:" % len(name))
        out(name)
        for fname in _field_names(t):
            _enc(getattr(obj, fname), out, depth + 1)
    else:
        raise MalformedMessageError(f"cannot encode a {t.__name__} canonically")


def encode(obj: Any) -> bytes:
    """The canonical bytes of `obj`; MalformedMessageError for a type it does not know."""
    parts: list[bytes] = []
    _enc(obj, parts.append, 0)
    return b"".join(parts)


def digest(obj: Any) -> bytes:
    """SHA-256 of the canonical bytes of `obj`."""
    return hashlib.sha256(encode(obj)).digest()
