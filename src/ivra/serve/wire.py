"""Frames on the wire: msgpack with numpy arrays in openpi's convention.

openpi (and its PyPI client ``openpi-client``) sends binary websocket frames holding one msgpack map. A numpy
array is a map ``{b"__ndarray__": True, b"data": <raw bytes, C order>, b"dtype": <dtype.str, e.g. "|u1">,
b"shape": [..]}``; a numpy scalar is ``{b"__npgeneric__": True, b"data": <python value>, b"dtype": ...}`` (the
marker keys are msgpack *bin*, so they unpack as ``bytes``). Object, void and complex dtypes are refused on
both sides (no pickle ever). Errors travel as *text* frames (the client raises on a ``str``).

This module implements that convention with :mod:`msgpack`'s own ``default``/``object_hook`` extension points,
and checks what arrives: a frame that is not msgpack, an array whose byte count does not match its shape and
dtype, or a forbidden dtype raise :class:`WireError` with a message that names the problem.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

ND, NPG = b"__ndarray__", b"__npgeneric__"
FORBIDDEN_KINDS = ("O", "V", "c")


class WireError(ValueError):
    """A frame that cannot be decoded; the message says why (sent back to the client as a text frame)."""


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in FORBIDDEN_KINDS:
        raise TypeError(f"cannot send numpy dtype {obj.dtype} (object/void/complex arrays are not allowed)")
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {ND: True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return {NPG: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot send a {type(obj).__name__} in a msgpack frame")


def _decode_hook(obj: dict) -> Any:
    if ND in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            shape = tuple(int(s) for s in obj[b"shape"])
            data = obj[b"data"]
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed array in frame: {exc}") from None
        if dtype.kind in FORBIDDEN_KINDS:
            raise WireError(f"array dtype {dtype} is not allowed (object/void/complex)")
        if not isinstance(data, (bytes, bytearray)):
            raise WireError(f"array data must be bytes, got {type(data).__name__}")
        if any(s < 0 for s in shape):
            raise WireError(f"array shape {shape} has a negative dimension")
        expected = math.prod(shape) * dtype.itemsize  # python ints: no overflow for absurd shapes
        if expected != len(data):
            raise WireError(
                f"array of shape {shape} and dtype {dtype} needs {expected} bytes, the frame has {len(data)}"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if NPG in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            if dtype.kind in FORBIDDEN_KINDS:
                raise WireError(f"scalar dtype {dtype} is not allowed")
            return dtype.type(obj[b"data"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed numpy scalar in frame: {exc}") from None
    return obj


def packb(obj: Any) -> bytes:
    """Encode a (nested) dict of numpy arrays / scalars / python values as one msgpack frame."""
    return msgpack.packb(obj, default=_encode_default, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Decode one frame; raises :class:`WireError` naming the problem."""
    if isinstance(data, str):
        raise WireError("expected a binary msgpack frame, got a text frame")
    try:
        return msgpack.unpackb(data, object_hook=_decode_hook, raw=False, strict_map_key=False)
    except WireError:
        raise
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise WireError(f"frame is not valid msgpack: {type(exc).__name__}: {exc}") from None
