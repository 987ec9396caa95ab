"""The ingress app over in-process fakes of its Kafka side: routes, auth, limits, errors, waits, events."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr

from aos_gateway.errors import KafkaError
from aos_gateway.settings import MediaSettings, Settings
from tests.unit.ingress.fakes import A, B, FakeSender, client, dead_letter, plan, result, settings

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32


def _submit(c, headers=A, **body):  # type: ignore[no-untyped-def]
    r = c.post("/v1/tasks", json={"text": "What's the weather in Paris?", **body}, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()["task_id"]


def test_a_json_task_is_accepted_and_produced_as_the_keys_tenant() -> None:
    with client() as (c, sender, _):
        r = c.post(
            "/v1/tasks",
            json={
                "text": "What's the weather in Paris?",
                "required_capabilities": ["weather"],
                "max_cost": 1.5,
                "max_latency_ms": 2000,
                "top_k": 3,
                "metadata": {"origin": "test"},
            },
            headers=A,
        )
        assert r.status_code == 202
        body = r.json()
        tid = body["task_id"]
        assert body["status_url"] == f"/v1/tasks/{tid}" == r.headers["location"]
        assert body["events_url"] == f"/v1/tasks/{tid}/events"
        [task] = sender.sent
        assert task["task_id"] == tid and task["tenant"] == "tenant-a"
        assert task["text"] == "What's the weather in Paris?" and task["image"] is None
        assert task["required_capabilities"] == ["weather"] and task["top_k"] == 3
        assert task["max_cost"] == 1.5 and task["max_latency_ms"] == 2000
        assert task["metadata"] == {"origin": "test"} and task["reply_to"] is None
        assert c.get(f"/v1/tasks/{tid}", headers=A).json()["status"] == "pending"


def test_x_api_key_works_like_bearer() -> None:
    with client() as (c, sender, _):
        _submit(c, headers=B)
        assert sender.sent[0]["tenant"] == "tenant-b"


def test_missing_or_wrong_keys_are_401_with_a_clear_error() -> None:
    with client() as (c, sender, _):
        for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}, {"Authorization": "Basic a2V5"}):
            r = c.post("/v1/tasks", json={"text": "hi"}, headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"] == "Bearer"
            assert "API key" in r.json()["error"]
        assert c.get("/v1/tasks/whatever").status_code == 401
        assert sender.sent == []


def test_a_client_cannot_choose_its_tenant() -> None:
    with client() as (c, sender, _):
        r = c.post("/v1/tasks", json={"text": "hi", "tenant": "tenant-b"}, headers=A)
        assert r.status_code == 422 and "API key" in r.json()["error"]
        assert sender.sent == []


def test_bad_json_bodies_are_4xx_with_the_reason() -> None:
    with client() as (c, sender, _):
        cases = [
            (b"{not json", 400, "malformed JSON"),
            (b"[1, 2]", 422, "JSON object"),
            (b'{"text": "x", "top_k": 0}', 422, "top_k"),
            (b'{"text": "x", "top_k": "many"}', 422, "top_k"),
            (b'{"text": "x", "colour": "red"}', 422, "colour"),
            (b'{"text": "   "}', 422, "empty task"),
            (b'{"text": "x", "max_cost": -1}', 422, "max_cost"),
            (json.dumps({"text": "x" * 9000}).encode(), 422, "limit is 8000"),
        ]
        for raw, status, words in cases:
            r = c.post("/v1/tasks", content=raw, headers={**A, "Content-Type": "application/json"})
            assert r.status_code == status, (raw[:30], r.text)
            assert words in r.json()["error"], r.json()
        r = c.post("/v1/tasks", content=b"text=hi", headers={**A, "Content-Type": "text/plain"})
        assert r.status_code == 415 and "application/json" in r.json()["error"]
        assert sender.sent == []


def test_multipart_uploads_become_inline_media_parts() -> None:
    with client() as (c, sender, _):
        r = c.post(
            "/v1/tasks",
            data={"text": "What is in this photo?", "required_capabilities": ["vision, ocr", "tagging"], "top_k": "2"},
            files={"image": ("photo.png", PNG, "image/png"), "audio": ("q.wav", WAV, "application/octet-stream")},
            headers=A,
        )
        assert r.status_code == 202, r.text
        [task] = sender.sent
        assert task["text"] == "What is in this photo?" and task["top_k"] == 2
        assert task["required_capabilities"] == ["vision", "ocr", "tagging"]
        image, audio = task["image"], task["audio"]
        assert image is not None and audio is not None
        assert image["data"] == PNG and image["mime_type"] == "image/png" and image["uri"] is None
        assert image["size_bytes"] == len(PNG) and image["sha256"] == hashlib.sha256(PNG).hexdigest()
        assert audio["data"] == WAV and audio["mime_type"] == "audio/x-wav"  # guessed from the file name


def test_an_image_alone_is_a_task() -> None:
    with client() as (c, sender, _):
        r = c.post("/v1/tasks", files={"image": ("p.png", PNG, "image/png")}, headers=A)
        assert r.status_code == 202, r.text
        assert sender.sent[0]["text"] is None and sender.sent[0]["image"] is not None


def test_bad_uploads_are_refused_with_the_reason() -> None:
    with client() as (c, sender, _):
        cases = [
            ({"image": ("notes.txt", b"hello", "text/plain")}, {}, 415, "image/*"),
            ({"image": ("p.png", b"", "image/png")}, {}, 422, "empty"),
            ({"video": ("v.mp4", b"xx", "video/mp4")}, {"text": "hi"}, 422, "unexpected file part 'video'"),
            ({"metadata": ("m.json", b"{}", "application/json")}, {"text": "hi"}, 422, "unexpected file part"),
            ({}, {"text": "hi", "image": "not a file"}, 422, "file part"),
            ({}, {"text": "hi", "metadata": "{oops"}, 422, "metadata"),
            ({}, {"text": "hi", "tenant": "tenant-b"}, 422, "API key"),
        ]
        for files, data, status, words in cases:
            r = c.post("/v1/tasks", files=files or None, data=data or None, headers=A)
            assert r.status_code == status, (files, data, r.text)
            assert words in r.json()["error"], r.json()
        assert sender.sent == []


def test_large_uploads_go_by_reference_only_with_an_upload_folder(tmp_path: Path) -> None:
    big = b"\x89PNG" + b"\x01" * 2000
    small_inline = Settings(
        ingress=settings().ingress.model_copy(update={"upload_dir": None}), media=MediaSettings(max_inline_bytes=1000)
    )
    with client(small_inline) as (c, sender, _):
        r = c.post("/v1/tasks", files={"image": ("p.png", big, "image/png")}, headers=A)
        assert r.status_code == 413 and "UPLOAD_DIR" in r.json()["error"]
    with_dir = small_inline.model_copy(
        update={"ingress": small_inline.ingress.model_copy(update={"upload_dir": tmp_path / "up"})}
    )
    with client(with_dir) as (c, sender, _):
        r = c.post("/v1/tasks", files={"image": ("p.png", big, "image/png")}, headers=A)
        assert r.status_code == 202, r.text
        part = sender.sent[0]["image"]
        assert part is not None and part["data"] is None and part["uri"] is not None
        path = Path(part["uri"].removeprefix("file://"))
        assert path.read_bytes() == big and path.parent == (tmp_path / "up").resolve()
        assert part["sha256"] == hashlib.sha256(big).hexdigest() and part["size_bytes"] == len(big)


def test_bodies_over_the_limit_are_413_by_header_or_by_counting() -> None:
    with client(settings(max_body_bytes=1000)) as (c, sender, _):
        r = c.post("/v1/tasks", json={"text": "x" * 2000}, headers=A)
        assert r.status_code == 413 and "1000 bytes" in r.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield b'{"text": "'
            for _ in range(30):
                yield b"y" * 100
            yield b'"}'

        r = c.post("/v1/tasks", content=chunks(), headers={**A, "Content-Type": "application/json"})
        assert r.status_code == 413 and "1000 bytes" in r.json()["error"]
        r = c.post("/v1/tasks", files={"image": ("p.png", b"\x89PNG" + b"\x00" * 5000, "image/png")}, headers=A)
        assert r.status_code == 413
        assert sender.sent == []


def test_a_task_is_readable_only_by_its_tenant() -> None:
    with client() as (c, _, feed):
        tid = _submit(c)
        feed.push("plan", plan(tid, "tenant-a"))
        assert c.get(f"/v1/tasks/{tid}", headers=A).json()["status"] == "planned"
        other = c.get(f"/v1/tasks/{tid}", headers=B)
        unknown = c.get("/v1/tasks/no-such-task", headers=B)
        assert other.status_code == unknown.status_code == 404
        assert other.json()["error"].replace(tid, "X") == unknown.json()["error"].replace("no-such-task", "X")
        assert c.get(f"/v1/tasks/{tid}/events", headers=B).status_code == 404
        # a plan seen on the topic for a task submitted elsewhere is readable by the plan's tenant only
        feed.push("plan", plan("elsewhere", "tenant-b"))
        assert c.get("/v1/tasks/elsewhere", headers=B).json()["status"] == "planned"
        assert c.get("/v1/tasks/elsewhere", headers=A).status_code == 404


def test_the_view_drops_the_task_vector_and_shows_the_result() -> None:
    with client() as (c, _, feed):
        tid = _submit(c)
        feed.push("plan", plan(tid, "tenant-a"))
        feed.push("result", result(tid, "tenant-a"))
        body = c.get(f"/v1/tasks/{tid}", headers=A).json()
        assert body["status"] == "done" and body["error"] is None
        assert "task_vector" not in body["plan"] and body["plan"]["steps"][0]["agent_id"] == "weather"
        assert body["result"]["output"] == "sunny"


def test_wait_long_polls_until_the_plan_or_the_result() -> None:
    with client() as (c, _, feed):
        tid = _submit(c)
        t0 = time.monotonic()
        r = c.get(f"/v1/tasks/{tid}", params={"wait": 0.3}, headers=A)
        assert r.json()["status"] == "pending" and 0.25 < time.monotonic() - t0 < 3
        feed.push_later(0.2, "plan", plan(tid, "tenant-a"))
        t0 = time.monotonic()
        r = c.get(f"/v1/tasks/{tid}", params={"wait": 10}, headers=A)
        assert r.json()["status"] == "planned" and time.monotonic() - t0 < 5
        feed.push_later(0.2, "result", result(tid, "tenant-a"))
        r = c.get(f"/v1/tasks/{tid}", params={"wait": 10, "until": "result"}, headers=A)
        assert r.json()["status"] == "done" and r.json()["result"]["status"] == "SUCCEEDED"
        bad = c.get(f"/v1/tasks/{tid}", params={"wait": -1, "until": "never"}, headers=A)
        assert bad.status_code == 422 and "wait" in bad.json()["error"] and "until" in bad.json()["error"]


def test_wait_is_capped_by_the_settings() -> None:
    with client(settings(max_wait_s=0.2)) as (c, _, _feed):
        tid = _submit(c)
        t0 = time.monotonic()
        assert c.get(f"/v1/tasks/{tid}", params={"wait": 30}, headers=A).json()["status"] == "pending"
        assert time.monotonic() - t0 < 3


def test_a_dead_lettered_task_fails_with_the_reason_and_ends_the_wait() -> None:
    with client() as (c, _, feed):
        tid = _submit(c)
        feed.push_later(0.1, "dead_letter", dead_letter(tid, "tenant-a"))
        body = c.get(f"/v1/tasks/{tid}", params={"wait": 10, "until": "result"}, headers=A).json()
        assert body["status"] == "failed" and "perceive" in body["error"] and "cannot decode" in body["error"]


def _events(text: str) -> list[tuple[str, str]]:
    out = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln]
        if not lines:
            continue
        if all(ln.startswith(":") for ln in lines):
            out.append(("comment", lines[0][1:].strip()))
            continue
        fields = dict(ln.split(": ", 1) for ln in lines)
        out.append((fields["event"], fields["data"]))
    return out


def test_events_stream_the_plan_then_the_result() -> None:
    with client() as (c, _, feed):
        tid = _submit(c)
        feed.push_later(0.1, "plan", plan(tid, "tenant-a"))
        feed.push_later(0.3, "result", result(tid, "tenant-a"))
        r = c.get(f"/v1/tasks/{tid}/events", headers=A)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [(e, d) for e, d in _events(r.text) if e != "comment"]
        assert [e for e, _ in events] == ["plan", "result"]
        assert json.loads(events[0][1])["plan_id"] == f"plan-{tid}" and "task_vector" not in json.loads(events[0][1])
        assert json.loads(events[1][1])["output"] == "sunny"
        # until=plan ends after the plan
        tid2 = _submit(c)
        feed.push("plan", plan(tid2, "tenant-a"))
        r = c.get(f"/v1/tasks/{tid2}/events", params={"until": "plan"}, headers=A)
        assert [e for e, _ in _events(r.text) if e != "comment"] == ["plan"]


def test_events_keep_alive_then_time_out_or_report_an_error() -> None:
    with client(settings(keepalive_s=0.1, stream_timeout_s=0.45)) as (c, _, feed):
        tid = _submit(c)
        events = _events(c.get(f"/v1/tasks/{tid}/events", headers=A).text)
        assert ("comment", "keepalive") in events
        assert events[-1][0] == "timeout" and "no result within 0.45s" in events[-1][1]
        tid2 = _submit(c)
        feed.push_later(0.05, "dead_letter", dead_letter(tid2, "tenant-a"))
        events = _events(c.get(f"/v1/tasks/{tid2}/events", headers=A).text)
        assert events[-1][0] == "error" and "cannot decode" in events[-1][1]


def test_kafka_trouble_is_503_and_the_task_is_forgotten() -> None:
    with client(sender=FakeSender(fail=KafkaError("Kafka did not acknowledge the task within 10s"))) as (c, _, _):
        r = c.post("/v1/tasks", json={"text": "hi"}, headers=A)
        assert r.status_code == 503 and "acknowledge" in r.json()["error"]
        assert c.app.state.store.get is not None and len(c.app.state.store) == 0  # type: ignore[attr-defined]


def test_without_keys_every_task_is_the_default_tenants() -> None:
    with client(settings(api_keys=None)) as (c, sender, feed):
        r = c.post("/v1/tasks", json={"text": "hi"})
        assert r.status_code == 202
        assert sender.sent[0]["tenant"] == "default"
        tid = r.json()["task_id"]
        feed.push("plan", plan(tid, "default"))
        assert c.get(f"/v1/tasks/{tid}", headers={"X-API-Key": "anything"}).json()["status"] == "planned"
        assert c.get("/healthz").json()["auth"] == "none"


def test_health_openapi_docs_and_unknown_routes() -> None:
    with client() as (c, _, _):
        health = c.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["auth"] == "api-keys"
        spec = c.get("/openapi.json").json()
        content = spec["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} <= set(content)
        assert content["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
        assert "/v1/tasks/{task_id}/events" in spec["paths"] and "/healthz" in spec["paths"]
        schemes = spec["components"]["securitySchemes"]
        assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
        docs = c.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        missing = c.get("/v2/nothing")
        assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
        wrong = c.put("/v1/tasks", json={})
        assert wrong.status_code == 405 and "error" in wrong.json()


def test_health_says_when_the_feed_stopped() -> None:
    with client() as (c, _, feed):
        feed.closed = True
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["feed"] == "stopped"
        feed.closed = False  # the context manager checks it is closed again at exit


def test_api_keys_from_a_file_rotate_without_a_restart(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from aos_gateway.ingress import auth

    monkeypatch.setattr(auth, "_RECHECK_S", 0.0)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"old-key": "tenant-a"}))
    with client(settings(api_keys=SecretStr(str(path)))) as (c, sender, _):
        assert c.post("/v1/tasks", json={"text": "hi"}, headers={"X-API-Key": "old-key"}).status_code == 202
        path.write_text(json.dumps({"new-key": "tenant-a"}))
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        assert c.post("/v1/tasks", json={"text": "hi"}, headers={"X-API-Key": "old-key"}).status_code == 401
        assert c.post("/v1/tasks", json={"text": "hi"}, headers={"X-API-Key": "new-key"}).status_code == 202
        assert len(sender.sent) == 2


def test_form_urlencoded_text_tasks_work_too() -> None:
    with client() as (c, sender, _):
        form = {**A, "Content-Type": "application/x-www-form-urlencoded"}
        r = c.post("/v1/tasks", content=b"text=hello+there&top_k=4", headers=form)
        assert r.status_code == 202, r.text
        assert sender.sent[0]["text"] == "hello there" and sender.sent[0]["top_k"] == 4
