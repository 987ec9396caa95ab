"""The hot store's points and idempotency keys, and its InfluxDB v2 calls against a stub HTTP server.

No InfluxDB server can run here: the stub answers the v2 API's write, bucket and org calls the way
InfluxDB documents them, so these tests check what influxdb-client sends, not what InfluxDB does.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from aos_gateway.errors import StoreError, ValidationError
from aos_gateway.experience.hot import (
    DEDUP_KEYS,
    MEASUREMENT,
    TAGS,
    HotStore,
    create_table_sql,
    point_values,
    to_point,
)
from aos_gateway.settings import TimeSeriesSettings

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
ORG_ID = "0123456789abcdef"


def _rec(i: int = 1, **over: Any) -> Any:
    rec: dict[str, Any] = {
        "experience_id": f"e{i}",
        "task_id": f"t{i}",
        "tenant": "acme",
        "kind": "STEP",
        "plan_id": f"p{i}",
        "agent_id": "a1",
        "agent_ids": ["a1"],
        "outcome": "SUCCEEDED",
        "latency_ms": 100 + i,
        "cost": 0.5,
        "task_vector": None,
        "error": None,
        "feedback_score": None,
        "occurred_at": T0 + i,
        "trace_id": "tr",
        "metadata": {"step_id": "s1", "role": "math", "attempts": "1", "fallback": "false"},
    }
    rec.update(over)
    return rec


def _line(rec: Any) -> str:
    return str(to_point(rec).to_line_protocol())  # type: ignore[no-untyped-call]


# -- points -----------------------------------------------------------------------------------


def test_a_step_record_is_one_point_with_its_tags_fields_and_ms_time() -> None:
    tags, fields, at = point_values(_rec(7))
    assert tags == {"tenant": "acme", "kind": "STEP", "outcome": "SUCCEEDED", "agent_id": "a1", "experience_id": "e7"}
    assert fields == {"latency_ms": 107, "cost": 0.5, "success": 1}
    assert at == T0 + 7
    assert _line(_rec(7)) == (
        f"{MEASUREMENT},agent_id=a1,experience_id=e7,kind=STEP,outcome=SUCCEEDED,tenant=acme "
        f"cost=0.5,latency_ms=107i,success=1i {T0 + 7}"
    )


@pytest.mark.parametrize(("outcome", "success"), [("SUCCEEDED", 1), ("PARTIAL", 1), ("FAILED", 0), ("TIMED_OUT", 0)])
def test_success_is_one_for_succeeded_and_partial(outcome: str, success: int) -> None:
    assert point_values(_rec(outcome=outcome))[1]["success"] == success


def test_an_execution_has_no_agent_tag_and_feedback_score_only_when_present() -> None:
    tags, fields, _ = point_values(_rec(kind="EXECUTION", agent_id=None, agent_ids=["a1", "a2"]))
    assert "agent_id" not in tags and "feedback_score" not in fields
    _, fields, _ = point_values(_rec(feedback_score=0.25))
    assert fields["feedback_score"] == 0.25
    assert "feedback_score=0.25" in _line(_rec(feedback_score=0.25))


def test_a_feedback_record_is_tagged_with_its_source() -> None:
    tags, _, _ = point_values(_rec(kind="EXECUTION", agent_id=None, metadata={"source": "feedback"}))
    assert tags["source"] == "feedback"
    assert "source" not in point_values(_rec())[0]


def test_field_types_never_change_with_the_input() -> None:
    # a whole cost from JSON is an int: it must still go out as a float, never as 3i
    for cost in (0, 3):
        line = _line(_rec(cost=cost, latency_ms=12.0))
        assert f"cost={cost}," in line and f"cost={cost}i" not in line
    assert "latency_ms=12i" in line
    assert point_values(_rec(cost=float("nan")))[1]["cost"] == 0.0
    assert "feedback_score" not in point_values(_rec(feedback_score=float("inf")))[1]


def test_empty_tags_are_left_out_the_same_way_every_time() -> None:
    tags, _, _ = point_values(_rec(tenant=""))
    assert "tenant" not in tags
    assert _line(_rec(tenant="")) == _line(_rec(tenant=""))


def test_a_record_without_experience_id_or_time_is_refused() -> None:
    with pytest.raises(ValidationError, match="without an experience_id"):
        point_values(_rec(experience_id=""))
    with pytest.raises(ValidationError, match="occurred_at"):
        point_values(_rec(occurred_at=None))


# -- idempotency keys -------------------------------------------------------------------------


def test_the_same_record_written_again_is_the_same_series_and_time() -> None:
    a = _rec(3)
    b = {**_rec(3), "metadata": dict(reversed(list(a["metadata"].items()))), "trace_id": "other", "error": "x"}
    assert _line(a) == _line(b)  # what is not written does not change the point


def test_two_records_in_the_same_millisecond_are_two_series() -> None:
    a, b = _rec(1), _rec(2, occurred_at=T0 + 1, latency_ms=101)
    assert point_values(a)[1:] == point_values(b)[1:]  # same fields and time...
    key_a, key_b = point_values(a)[0], point_values(b)[0]
    assert key_a != key_b  # ...but not the same series: neither overwrites the other in InfluxDB
    assert key_a["experience_id"] != key_b["experience_id"]


def test_questdb_table_dedups_on_time_and_experience_id_with_a_ttl() -> None:
    ddl = create_table_sql(7)
    assert DEDUP_KEYS == ("ts", "experience_id")
    assert ddl.startswith(f"CREATE TABLE IF NOT EXISTS {MEASUREMENT} (")
    assert ddl.endswith("TIMESTAMP(ts) PARTITION BY DAY TTL 7 DAYS WAL DEDUP UPSERT KEYS(ts, experience_id)")
    assert "experience_id VARCHAR" in ddl  # not a SYMBOL: one value per record
    for tag in TAGS:
        assert f"{tag} " in ddl
    for column in ("latency_ms LONG", "cost DOUBLE", "success LONG", "feedback_score DOUBLE", "ts TIMESTAMP"):
        assert column in ddl
    assert "TTL 3 DAYS" in create_table_sql(3)


# -- the InfluxDB v2 API, against a stub ------------------------------------------------------


@dataclass
class _Influx:
    """What the stub server saw, and the buckets it holds."""

    port: int = 0
    requests: list[tuple[str, str, dict[str, list[str]], bytes]] = field(default_factory=list)
    buckets: list[dict[str, Any]] = field(default_factory=list)
    write_status: int = 204

    def calls(self, method: str, path: str) -> list[tuple[dict[str, list[str]], bytes]]:
        return [(q, b) for m, p, q, b in self.requests if m == method and p == path]


@pytest.fixture
def influx() -> Iterator[_Influx]:
    state = _Influx()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.requests.append((self.command, url.path, query, body))
            if url.path == "/api/v2/write":
                if state.write_status == 204:
                    self._answer(204)
                else:
                    self._answer(state.write_status, {"code": "invalid", "message": "partial write:\nfield type"})
            elif url.path == "/api/v2/orgs":
                self._answer(200, {"orgs": [{"id": ORG_ID, "name": "aos"}]})
            elif url.path == "/api/v2/buckets" and self.command == "GET":
                names = query.get("name", [])
                self._answer(200, {"buckets": [b for b in state.buckets if b["name"] in names]})
            elif url.path == "/api/v2/buckets" and self.command == "POST":
                req = json.loads(body)
                bucket = {"id": "00000000000000b1", "name": req["name"], "orgID": req["orgID"]}
                bucket["retentionRules"] = req["retentionRules"]
                state.buckets.append(bucket)
                self._answer(201, bucket)
            elif url.path.startswith("/api/v2/buckets/") and self.command == "PATCH":
                req = json.loads(body)
                bucket = next(b for b in state.buckets if url.path.endswith(b["id"]))
                bucket["retentionRules"] = req["retentionRules"]
                self._answer(200, bucket)
            else:
                self._answer(404, {"code": "not found", "message": f"{self.command} {url.path}"})

        do_GET = do_POST = do_PATCH = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _influx_settings(port: int, **over: Any) -> TimeSeriesSettings:
    base: dict[str, Any] = {
        "flavour": "influxdb",
        "url": f"http://127.0.0.1:{port}",
        "token": SecretStr("tok"),
        "org": "aos",
        "bucket": "aos",
        "retention_days": 7,
    }
    base.update(over)
    return TimeSeriesSettings(**base)


def test_write_sends_batches_of_lines_in_ms_precision(influx: _Influx) -> None:
    influx.buckets.append(
        {"id": "00000000000000b1", "name": "aos", "retentionRules": [{"type": "expire", "everySeconds": 7 * 86_400}]}
    )
    recs = [_rec(i) for i in range(12)]
    with HotStore(_influx_settings(influx.port), batch_size=5) as store:
        assert store.write(recs) == 12
    writes = influx.calls("POST", "/api/v2/write")
    assert [len(body.decode().splitlines()) for _, body in writes] == [5, 5, 2]
    for query, _ in writes:
        assert query["precision"] == ["ms"] and query["bucket"] == ["aos"] and query["org"] == ["aos"]
    lines = [ln for _, body in writes for ln in body.decode().splitlines()]
    assert lines == [_line(r) for r in recs]
    assert not influx.calls("POST", "/api/v2/buckets")  # the bucket exists with the right retention


def test_nothing_to_write_makes_no_request(influx: _Influx) -> None:
    with HotStore(_influx_settings(influx.port)) as store:
        assert store.write([]) == 0
    assert influx.requests == []


def test_influx_bucket_is_created_with_the_retention(influx: _Influx) -> None:
    with HotStore(_influx_settings(influx.port, retention_days=7)) as store:
        store.ensure_schema()
    ((query, _),) = influx.calls("GET", "/api/v2/buckets")
    assert query["name"] == ["aos"] and query["org"] == ["aos"]
    ((_, body),) = influx.calls("POST", "/api/v2/buckets")
    req = json.loads(body)
    assert req["name"] == "aos" and req["orgID"] == ORG_ID
    assert req["retentionRules"] == [{"type": "expire", "everySeconds": 604_800}]


def test_influx_bucket_retention_is_updated_only_when_it_differs(influx: _Influx) -> None:
    influx.buckets.append(
        {"id": "00000000000000b1", "name": "aos", "retentionRules": [{"type": "expire", "everySeconds": 30 * 86_400}]}
    )
    with HotStore(_influx_settings(influx.port, retention_days=7)) as store:
        store.ensure_schema()
        store.ensure_schema()  # now equal: no second PATCH
    patches = influx.calls("PATCH", "/api/v2/buckets/00000000000000b1")
    assert len(patches) == 1
    assert json.loads(patches[0][1])["retentionRules"] == [{"type": "expire", "everySeconds": 604_800}]
    assert not influx.calls("POST", "/api/v2/buckets")


def test_a_refused_write_is_a_one_line_store_error(influx: _Influx) -> None:
    influx.write_status = 400
    influx.buckets.append(
        {"id": "00000000000000b1", "name": "aos", "retentionRules": [{"type": "expire", "everySeconds": 7 * 86_400}]}
    )
    with HotStore(_influx_settings(influx.port)) as store, pytest.raises(StoreError) as err:
        store.write([_rec()])
    msg = str(err.value)
    assert "\n" not in msg
    url = f"http://127.0.0.1:{influx.port}"
    assert msg == f"hot store at {url} refused a write of 1 points (HTTP 400): partial write: field type"


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_influx_is_a_one_line_store_error() -> None:
    port = _dead_port()
    with HotStore(_influx_settings(port)) as store, pytest.raises(StoreError) as err:
        store.ensure_schema()
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"hot store at http://127.0.0.1:{port} is unreachable (creating or updating bucket 'aos'): ")
    assert "Connection refused" in msg


def test_an_unreachable_questdb_fails_before_any_point_is_sent(influx: _Influx) -> None:
    pg = _dead_port()
    settings = TimeSeriesSettings(
        flavour="questdb",
        url=f"http://127.0.0.1:{influx.port}",
        questdb_pg=f"host=127.0.0.1 port={pg} user=admin password=quest dbname=qdb connect_timeout=2",
    )
    with HotStore(settings) as store, pytest.raises(StoreError) as err:
        store.write([_rec()])
    assert str(err.value).startswith(f"hot store: QuestDB's PostgreSQL wire at 127.0.0.1:{pg} is unreachable: ")
    assert "password" not in str(err.value)  # the conninfo is not echoed
    assert influx.requests == []


def test_query_counts_reads_questdb_only_and_groups_by_known_columns() -> None:
    with pytest.raises(StoreError, match="influxdb flavour"):
        HotStore(_influx_settings(1)).query_counts()
    questdb = HotStore(TimeSeriesSettings(flavour="questdb"))
    with pytest.raises(ValueError, match="cannot group by"):
        questdb.query_counts(("tenant; DROP TABLE aos_experience",))


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        HotStore(TimeSeriesSettings(), batch_size=0)
