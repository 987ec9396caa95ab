"""The HTTP ingress against hostile requests: arbitrary JSON, raw bytes, multipart bodies, headers.

The app runs in-process over the unit tests' fakes of its Kafka side, except that the sender
encodes each task with the tasks topic's codec, as the Kafka sender does (what the producer would
refuse must have been refused as the client's error first). Every answer is a 2xx or a 4xx with a
JSON ``{"error": ...}``; never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from aos_gateway.contracts.records import TASK_REQUEST, TaskRequest
from aos_gateway.contracts.wire import SingleObjectCodec
from aos_gateway.ingress.api import create_app
from aos_gateway.settings import MediaSettings, Settings
from tests.fuzz.strategies import FUZZ_TIMEOUT, any_float, any_text, fuzz, json_values
from tests.unit.ingress.fakes import A, FakeFeed, FakeSender, settings

pytestmark = FUZZ_TIMEOUT

TASKS = SingleObjectCodec(TASK_REQUEST)
ALLOWED = {202, 400, 401, 404, 405, 413, 415, 422, 429}


class EncodingSender(FakeSender):
    """Encodes like the Kafka sender (a SerializationError there was a 500)."""

    async def send(self, task: TaskRequest) -> None:
        TASKS.encode(task)
        await super().send(task)


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    base = settings(max_body_bytes=64 * 1024, upload_dir=Path(tmp_path_factory.mktemp("uploads")))
    s = Settings(ingress=base.ingress, media=MediaSettings(max_inline_bytes=256, max_ref_bytes=4096))
    s.perception.max_text_chars = 500
    app = create_app(s, EncodingSender(), FakeFeed())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _check(r: Any) -> None:
    assert r.status_code in ALLOWED, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body


FIELDS = ["text", "required_capabilities", "max_cost", "max_latency_ms", "top_k", "metadata", "tenant", "colour"]


def task_bodies() -> st.SearchStrategy[Any]:
    """Mostly-valid task bodies with hostile values (lone surrogates, NaN, numbers beyond an Avro int,
    long texts), the same with one field of any JSON (or an unknown field), and any JSON at all."""
    valid = st.fixed_dictionaries(
        {"text": st.one_of(st.just("What's the weather in Paris?"), any_text, st.text(min_size=490, max_size=510))},
        optional={
            "required_capabilities": st.lists(any_text, max_size=3),
            "max_cost": any_float,
            "max_latency_ms": st.one_of(st.integers(0, 2**40), st.sampled_from([2**31 - 1, 2**31, 2**63])),
            "top_k": st.integers(1, 100),
            "metadata": st.dictionaries(any_text, any_text, max_size=3),
        },
    )
    value = st.one_of(json_values, st.integers(-(2**70), 2**70))
    mutated = st.builds(lambda body, field, v: {**body, field: v}, valid, st.sampled_from(FIELDS), value)
    return st.one_of(valid, valid, mutated, json_values)


@fuzz(150)
@given(task_bodies())
def test_any_json_body_is_accepted_or_refused_with_a_json_error(http: TestClient, body: Any) -> None:
    raw = json.dumps(body, allow_nan=True).encode()  # ensure_ascii: lone surrogates as \\udxxx escapes
    _check(http.post("/v1/tasks", content=raw, headers={**A, "Content-Type": "application/json"}))


@fuzz(120)
@given(
    st.one_of(st.binary(max_size=300), st.integers(1, 50_000).map(lambda n: b"[" * n), st.just(b'{"text":' * 3000)),
    st.sampled_from(["application/json", "application/problem+json", "text/plain", "", "application/json; charset=x"]),
)
def test_any_bytes_are_refused_with_a_json_error(http: TestClient, raw: bytes, ctype: str) -> None:
    _check(http.post("/v1/tasks", content=raw, headers={**A, "Content-Type": ctype}))


def test_deep_nesting_and_lone_surrogates_are_client_errors(http: TestClient) -> None:
    """Regressions: JSON nested 100,000 deep (a RecursionError), and a lone surrogate or a
    max_latency_ms beyond an Avro int (the producer's SerializationError) were 500s."""
    for raw, status in [
        (b"[" * 20_000, 400),
        (b'{"metadata": ' + b"[" * 20_000 + b"}", 400),
        (b'{"text": "\\ud800"}', 422),
        (b'{"text": "hi", "metadata": {"\\udfff": "x"}}', 422),
        (b'{"text": "hi", "required_capabilities": ["\\udfff"]}', 422),
        (b'{"text": "hi", "max_latency_ms": 2147483648}', 422),
    ]:
        r = http.post("/v1/tasks", content=raw, headers={**A, "Content-Type": "application/json"})
        assert r.status_code == status, (raw[:40], r.text)
        assert r.json()["error"]


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    """A multipart/form-data body built by hand, so names, headers and values can be any bytes."""
    boundary = draw(st.sampled_from(["b0undary", "x" * 70, "a-b"]))
    parts: list[bytes] = []
    text_bytes = st.one_of(any_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=40))
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.one_of(st.sampled_from([*FIELDS, "image", "audio", "video"]), any_text))
        disp = f'form-data; name="{name}"'.encode("utf-8", "surrogatepass")
        headers = [b"Content-Disposition: " + disp]
        if draw(st.booleans()):  # a file part
            filename = draw(st.one_of(st.sampled_from(["p.png", "q.wav", "x", "", "../../etc/passwd"]), any_text))
            headers[0] += f'; filename="{filename}"'.encode("utf-8", "surrogatepass")
            ctype = draw(
                st.sampled_from(["image/png", "audio/wav", "application/octet-stream", "text/plain", "", "image/"])
            )
            if ctype:
                headers.append(f"Content-Type: {ctype}".encode())
            body = draw(st.one_of(st.binary(max_size=600), st.just(b"\x89PNG" + b"\x00" * 1000)))
        else:
            body = draw(text_bytes)
        parts.append(b"\r\n".join(headers) + b"\r\n\r\n" + body)
    b = boundary.encode()
    raw = b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + b + b"--\r\n"
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]  # cut short
    return raw, f"multipart/form-data; boundary={boundary}"


@fuzz(150)
@given(multipart())
def test_any_multipart_body_is_accepted_or_refused_with_a_json_error(http: TestClient, case: tuple[bytes, str]) -> None:
    raw, ctype = case
    _check(http.post("/v1/tasks", content=raw, headers={**A, "Content-Type": ctype}))


@fuzz(100)
@given(
    st.lists(st.tuples(st.sampled_from(FIELDS), any_text.map(lambda t: t.encode("utf-8", "surrogatepass"))), max_size=4)
)
def test_any_urlencoded_form_is_accepted_or_refused(http: TestClient, fields: list[tuple[str, bytes]]) -> None:
    from urllib.parse import quote_from_bytes

    raw = "&".join(f"{k}={quote_from_bytes(v)}" for k, v in fields).encode()
    _check(http.post("/v1/tasks", content=raw, headers={**A, "Content-Type": "application/x-www-form-urlencoded"}))


@fuzz(80)
@given(
    st.one_of(any_text.filter(lambda t: t not in ("", ".", "..")), st.just("x" * 5000)),
    st.dictionaries(
        st.sampled_from(["wait", "until", "x"]), st.sampled_from(["nan", "inf", "-1", "1e309", "plan", "", "0"])
    ),
    st.sampled_from([A, {}, {"Authorization": "Bearer \x7f"}, {"Authorization": "Basic"}, {"X-API-Key": ""}]),
)
def test_any_task_id_query_and_credentials_are_answered_with_json(
    http: TestClient, task_id: str, params: dict[str, str], headers: dict[str, str]
) -> None:
    from urllib.parse import quote

    path = "/v1/tasks/" + quote(task_id.encode("utf-8", "surrogatepass"), safe="")
    _check(http.get(path, params=params, headers=headers))


@fuzz(100)
@given(st.sampled_from(["abc", "-1", "1e3", "99999999999999999999999", " 10", "0x10", ""]))
def test_any_content_length_header_is_answered_with_json(http: TestClient, length: str) -> None:
    r = http.post(
        "/v1/tasks",
        content=b'{"text": "hi"}',
        headers={**A, "Content-Type": "application/json", "Content-Length": length},
    )
    assert r.status_code != 500 and r.status_code < 600
