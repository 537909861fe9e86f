"""Wire encodings of `/act`: JSON (orjson) and `application/msgpack` with a numpy-array codec.

An ndarray travels as a msgpack map `{"__ndarray__": True, "dtype": "<f4", "shape": [...], "data": bytes}`
(the layout openpi's msgpack_numpy uses), so a controller can send a float32 state without a list of Python
floats. Only plain numeric dtypes are accepted: object arrays would need pickle, and pickle executes code
chosen by whoever wrote the bytes, so it is refused everywhere on the serving path.

Imports neither fastapi nor onnxruntime: the client uses this module too.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import numpy as np
import orjson

JSON = "application/json"
MSGPACK = "application/msgpack"
MEDIA_TYPES = (JSON, MSGPACK)
# Bool, signed/unsigned int, float: everything a state or an action can be; never "O" (object → pickle).
_NUMERIC_KINDS = frozenset("biuf")
_ND_KEY = "__ndarray__"


class CodecError(ValueError):
    """A body that cannot be decoded; the message says what was wrong."""


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"cannot send a numpy array of dtype {obj.dtype}: only numeric arrays travel")
        arr = np.ascontiguousarray(obj)
        return {_ND_KEY: True, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} as msgpack")


def _unpack_hook(obj: dict[Any, Any]) -> Any:
    if obj.get(_ND_KEY) is not True:
        return obj
    try:
        dtype = np.dtype(obj["dtype"])
        shape = tuple(int(n) for n in obj["shape"])
        data = obj["data"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"malformed ndarray in msgpack body ({exc}); use service.codec.packb") from exc
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject:
        raise CodecError(f"ndarray dtype {dtype} is refused: only bool/int/float arrays (never pickle)")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise CodecError(f"ndarray data does not match dtype {dtype} and shape {list(shape)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def packb(obj: Any) -> bytes:
    """msgpack with ndarrays as typed byte blobs."""
    return msgpack.packb(obj, default=_pack_default, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Inverse of `packb`; raises CodecError on anything it does not understand (never unpickles)."""
    try:
        return msgpack.unpackb(data, object_hook=_unpack_hook, raw=False, strict_map_key=True)
    except CodecError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise CodecError(f"body is not valid msgpack: {exc}") from exc


def to_plain(obj: Any) -> Any:
    """ndarrays → nested lists, so a decoded msgpack body validates like a JSON one."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    return obj


def media_type(content_type: str | None) -> str | None:
    """The bare media type of a Content-Type header (`application/json; charset=utf-8` → json)."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower()


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


def decode(body: bytes, content_type: str | None) -> Any:
    """Decode a body by its Content-Type (JSON when absent) into plain Python (ndarrays become lists);
    CodecError if it is not valid."""
    kind = media_type(content_type) or JSON
    if kind == MSGPACK:
        return to_plain(unpackb(body))
    if kind == JSON or kind.endswith("+json"):
        return loads_json(body)
    raise CodecError(f"unsupported content type {kind!r}")


def encode(obj: Any, kind: str) -> bytes:
    """Encode a reply as JSON or msgpack (numpy arrays and scalars are allowed in `obj`)."""
    if kind == MSGPACK:
        return packb(obj)
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
