from __future__ import annotations

import numpy as np
import pytest

from aos_gateway.errors import SerializationError
from aos_gateway.perception.vectors import l2_normalize, pack, unpack


def test_l2_normalize_rows_and_zero_rows() -> None:
    out = l2_normalize([[3.0, 4.0], [0.0, 0.0]])
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize(
    ("dtype", "tol", "size"), [("FLOAT32", 0, 4 * 384), ("FLOAT16", 1e-3, 2 * 384), ("INT8", 1e-2, 384)]
)
def test_pack_roundtrip(dtype: str, tol: float, size: int) -> None:
    rng = np.random.default_rng(0)
    vec = l2_normalize(rng.normal(size=384))
    nv = pack("text", vec, dtype, "m")
    assert len(nv["data"]) == size and nv["dim"] == 384
    assert np.max(np.abs(unpack(nv) - vec)) <= tol + 1e-7


def test_unpack_checks_length() -> None:
    nv = pack("text", np.ones(8), "FLOAT16")
    nv["dim"] = 9
    with pytest.raises(SerializationError, match="do not hold"):
        unpack(nv)
