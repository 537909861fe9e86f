"""msgpack with numpy arrays, the binary encoding of `/act` (the server's `service.codec` builds on it).

An ndarray travels as a msgpack map `{"__ndarray__": True, "dtype": "<f4", "shape": [...], "data": bytes}`
(the layout openpi's msgpack_numpy uses), so a controller can send a float32 state without a list of Python
floats. Only plain numeric dtypes are accepted: object arrays would need pickle, and pickle executes code
chosen by whoever wrote the bytes, so it is refused on both sides.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import msgpack
import numpy as np

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
        raise CodecError(
            f"malformed ndarray in msgpack body ({exc}); encode it with qipo_client.codec.packb"
        ) from exc
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject:
        raise CodecError(f"ndarray dtype {dtype} is refused: only bool/int/float arrays (never pickle)")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise CodecError(f"ndarray data does not match dtype {dtype} and shape {list(shape)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def packb(obj: Any) -> bytes:
    """msgpack with ndarrays as typed byte blobs."""
    packed: bytes = msgpack.packb(obj, default=_pack_default, use_bin_type=True)
    return packed


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


def media_type(content_type: Optional[str]) -> Optional[str]:
    """The bare media type of a Content-Type header (`application/json; charset=utf-8` → json)."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def encode(obj: Any, kind: str) -> bytes:
    """A request body as msgpack (ndarrays as blobs) or JSON (ndarrays as lists)."""
    if kind == MSGPACK:
        return packb(obj)
    return json.dumps(to_plain(obj)).encode()


def decode(body: bytes, kind: str) -> Any:
    """A reply body in plain Python (ndarrays become lists); CodecError if it is not valid."""
    if kind == MSGPACK:
        return to_plain(unpackb(body))
    try:
        return json.loads(body)
    except ValueError as exc:
        raise CodecError(f"body is not valid JSON: {exc}") from exc
