"""Vectors on the wire: normalised numpy arrays as compact little-endian bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from aos_gateway.contracts.records import NamedVector
from aos_gateway.errors import SerializationError

_DTYPES: dict[str, np.dtype[Any]] = {"FLOAT32": np.dtype("<f4"), "FLOAT16": np.dtype("<f2"), "INT8": np.dtype("i1")}

FloatArray = npt.NDArray[np.float32]


def l2_normalize(x: npt.ArrayLike) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero)."""
    arr = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    out: FloatArray = np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0)
    return out


def pack(name: str, vec: npt.ArrayLike, dtype: str = "FLOAT16", model: str = "") -> NamedVector:
    """One vector as a NamedVector record (FLOAT32, FLOAT16, or INT8 with a scale)."""
    arr = np.asarray(vec, dtype=np.float32).reshape(-1)
    key = dtype.upper()
    scale = 1.0
    if key == "INT8":
        peak = float(np.max(np.abs(arr))) if arr.size else 0.0
        scale = peak / 127.0 if peak > 0 else 1.0
        data = np.clip(np.round(arr / scale), -127, 127).astype(_DTYPES[key]).tobytes()
    elif key in _DTYPES:
        data = arr.astype(_DTYPES[key]).tobytes()
    else:
        raise SerializationError(f"unknown vector dtype {dtype!r}")
    return NamedVector(name=name, model=model, dim=int(arr.size), dtype=key, scale=scale, data=data)  # type: ignore[typeddict-item]


def unpack(v: NamedVector) -> FloatArray:
    """A NamedVector back to float32 (checks the byte length against dim)."""
    dt = _DTYPES.get(v["dtype"])
    if dt is None:
        raise SerializationError(f"unknown vector dtype {v['dtype']!r}")
    if len(v["data"]) != v["dim"] * dt.itemsize:
        raise SerializationError(
            f"vector {v['name']!r}: {len(v['data'])} bytes do not hold {v['dim']} {v['dtype']} values"
        )
    arr: FloatArray = np.frombuffer(v["data"], dtype=dt).astype(np.float32)
    if v["dtype"] == "INT8":
        arr = arr * np.float32(v["scale"])
    return arr
