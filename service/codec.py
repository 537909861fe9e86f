"""The server's side of the `/act` encodings: orjson for JSON, and the msgpack-with-ndarrays codec of the
client distribution (`qipo_client.codec`), imported rather than copied so the two ends cannot drift.

What is only here is what only a server needs: orjson (fast, numpy-aware replies), a NaN-tolerant JSON
parse that lets a 422 name the field holding a NaN, and a per-header cache of media types for the hot path.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from qipo_client.codec import JSON, MEDIA_TYPES, MSGPACK, CodecError, media_type, packb, to_plain, unpackb

__all__ = [
    "JSON",
    "MEDIA_TYPES",
    "MSGPACK",
    "CodecError",
    "encode",
    "loads_json",
    "media_type",
    "media_type_of",
    "packb",
    "to_plain",
    "unpackb",
]

_RAW_KINDS: dict[bytes, str] = {}


def media_type_of(raw: bytes | None) -> str:
    """`media_type` of a raw header value (JSON when absent), remembered per distinct value: a fleet sends
    a handful of spellings, so the hot path parses each once."""
    if raw is None:
        return JSON
    kind = _RAW_KINDS.get(raw)
    if kind is None:
        kind = media_type(raw.decode("latin-1")) or JSON
        if len(_RAW_KINDS) < 256:  # bounded: arbitrary clients cannot grow it
            _RAW_KINDS[raw] = kind
    return kind


def loads_json(body: bytes) -> Any:
    """orjson, with a fallback that parses NaN / Infinity literals so the 422 can name the field holding
    one; CodecError if the body is not JSON at all."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body, parse_constant=float)
        except ValueError:
            raise CodecError(f"body is not valid JSON: {exc}") from exc


def encode(obj: Any, kind: str) -> bytes:
    """Encode a reply as JSON or msgpack (numpy arrays and scalars are allowed in `obj`)."""
    if kind == MSGPACK:
        return packb(obj)
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
