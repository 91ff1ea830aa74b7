"""The msgpack-numpy frame convention (openpi's): round trips, the exact map layout, and refused frames."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from ivra.serve import wire


def test_round_trip_keeps_dtype_shape_and_values():
    rng = np.random.default_rng(0)
    obs = {
        "observation/image": rng.integers(0, 256, (4, 5, 3), dtype=np.uint8),
        "observation/state": rng.standard_normal(8).astype(np.float32),
        "prompt": "pick up the bowl",
        "scalar": np.float32(
            2.5
        ),  # a numpy scalar msgpack cannot pack natively (np.float64 is a python float)
        "nested": {"a": [1, 2], "b": None},
        "f16": np.arange(6, dtype=np.float16).reshape(2, 3)[:, ::2],  # non-contiguous
    }
    back = wire.unpackb(wire.packb(obs))
    for k in ("observation/image", "observation/state", "f16"):
        assert back[k].dtype == obs[k].dtype and back[k].shape == obs[k].shape
        np.testing.assert_array_equal(back[k], obs[k])
    assert back["prompt"] == obs["prompt"] and back["nested"] == {"a": [1, 2], "b": None}
    assert isinstance(back["scalar"], np.float32) and back["scalar"] == 2.5


def test_layout_is_openpis():
    """An array is a map with bin keys __ndarray__/data/dtype/shape (what openpi_client.msgpack_numpy writes)."""
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    raw = msgpack.unpackb(wire.packb({"x": a}), raw=False)
    assert raw["x"] == {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": "<i2", b"shape": [2, 3]}
    # and a frame written that way by hand decodes
    frame = msgpack.packb(
        {"x": {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": "<i2", b"shape": (2, 3)}}
    )
    np.testing.assert_array_equal(wire.unpackb(frame)["x"], a)


@pytest.mark.parametrize(
    "frame, needle",
    [
        (b"\xc1", "not valid msgpack"),
        ("text", "got a text frame"),
        (
            msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": (2**40, 2**40)}),
            "needs",
        ),
        (msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": (-1,)}), "negative"),
        (msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "<c8", b"shape": (0,)}), "not allowed"),
        (
            msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "nonsense", b"shape": (0,)}),
            "malformed array",
        ),
    ],
)
def test_bad_frames_are_named(frame, needle):
    with pytest.raises(wire.WireError, match=needle):
        wire.unpackb(frame)


def test_object_arrays_are_never_sent():
    with pytest.raises(TypeError, match="object/void/complex"):
        wire.packb({"x": np.array([object()])})
