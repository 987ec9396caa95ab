from __future__ import annotations

from typing import Any

from aos_gateway.contracts.records import WEIGHTS
from aos_gateway.contracts.wire import SingleObjectCodec
from aos_gateway.matching import weights
from aos_gateway.matching.learned import empty_state
from aos_gateway.network import quality
from aos_gateway.streams.weights_view import WeightsView


class _Msg:
    def __init__(self, key: str, value: bytes | None, offset: int) -> None:
        self._k, self._v, self._o = key.encode(), value, offset

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def offset(self) -> int:
        return self._o


def test_each_named_state_goes_to_its_handler_newest_version_only() -> None:
    codec = SingleObjectCodec(WEIGHTS)
    got: dict[str, list[Any]] = {"matching": [], "quality": []}
    view = WeightsView(
        {"bootstrap.servers": "127.0.0.1:1"},
        "aos.weights.v1",
        codec,
        got["matching"].append,
        extra={quality.NAME: (quality.from_record, got["quality"].append)},
    )
    state = empty_state(["a"], 4)
    state.version = 3
    old, new = quality.QualityModel(version=1), quality.QualityModel(prior=0.5, version=2)
    msgs = [
        _Msg(quality.NAME, codec.encode(quality.to_record(old, 1)), 0),
        _Msg(weights.NAME, codec.encode(weights.to_record(state, 3)), 1),
        _Msg(quality.NAME, codec.encode(quality.to_record(new, 2)), 2),
        _Msg("someone.else", b"not even avro", 3),
        _Msg(quality.NAME, b"garbage", 4),
    ]
    view.apply(msgs)
    assert [m.prior for m in got["quality"]] == [0.5]  # only the newest
    assert [s.version for s in got["matching"]] == [3]
    assert view.versions == {quality.NAME: 2, weights.NAME: 3} and view.version == 3 and view.skipped == 1
    view.apply([_Msg(quality.NAME, codec.encode(quality.to_record(old, 1)), 5)])  # older: ignored
    assert len(got["quality"]) == 1
