"""Request bodies -> TaskRequests: JSON and form fields, media parts, the perceive stage's rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aos_gateway.ingress.tasks import RequestError, TaskIn, build_task, media_part, parse_form, parse_json
from aos_gateway.settings import MediaSettings


def test_form_fields_parse_like_json() -> None:
    body = parse_form(
        [
            ("text", "hello"),
            ("required_capabilities", "a, b"),
            ("required_capabilities", "c"),
            ("max_cost", "2.5"),
            ("top_k", "3"),
            ("max_latency_ms", ""),
            ("metadata", '{"k": "v"}'),
        ]
    )
    same = b'{"text": "hello", "required_capabilities": ["a", "b", "c"], "max_cost": 2.5, "top_k": 3, '
    assert body == parse_json(same + b'"metadata": {"k": "v"}}')


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ([("text", "a"), ("text", "b")], 422, "more than once"),
        ([("top_k", "x")], 422, "top_k"),
        ([("metadata", "[1]")], 422, "metadata"),
        ([("metadata", '{"n": 1}')], 422, "metadata.n"),
        ([("tenant", "b")], 422, "API key"),
    ],
)
def test_bad_form_fields(fields: list[tuple[str, str]], status: int, words: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_form(fields)
    assert err.value.status == status and words in str(err.value)


def test_media_types_come_from_the_part_or_the_file_name() -> None:
    m = MediaSettings()
    assert media_part("image", b"x", "image/jpeg; q=1", None, m, None)["mime_type"] == "image/jpeg"
    assert media_part("image", b"x", "application/octet-stream", "a.png", m, None)["mime_type"] == "image/png"
    assert media_part("audio", b"x", None, "a.flac", m, None)["mime_type"] == "audio/flac"
    for ctype, name in (("text/plain", "a.png"), ("audio/wav", None), (None, None), (None, "a.txt")):
        with pytest.raises(RequestError) as err:
            media_part("image", b"x", ctype, name, m, None)
        assert err.value.status == 415


def test_media_size_rules(tmp_path: Path) -> None:
    m = MediaSettings(max_inline_bytes=10, max_ref_bytes=100)
    inline = media_part("image", b"0123456789", "image/png", None, m, None)
    assert inline["data"] == b"0123456789" and inline["sha256"] == hashlib.sha256(b"0123456789").hexdigest()
    with pytest.raises(RequestError) as err:
        media_part("image", b"x" * 101, "image/png", None, m, tmp_path)
    assert err.value.status == 413 and "101 bytes > 100" in str(err.value)
    with pytest.raises(RequestError) as err:
        media_part("image", b"x" * 11, "image/png", None, m, None)
    assert err.value.status == 413
    ref = media_part("image", b"x" * 11, "image/png", None, m, tmp_path)
    again = media_part("image", b"x" * 11, "image/png", None, m, tmp_path)
    assert ref == again and ref["uri"] is not None and ref["uri"].endswith(".png")
    assert [p.name for p in tmp_path.iterdir()] == [f"{hashlib.sha256(b'x' * 11).hexdigest()}.png"]
    with pytest.raises(RequestError) as err:
        media_part("audio", b"", "audio/wav", None, m, None)
    assert err.value.status == 422


def test_build_task_applies_the_perceive_stage_rules() -> None:
    task = build_task(TaskIn(text="  hi  ", top_k=2), "tenant-a", 100)
    assert task["tenant"] == "tenant-a" and task["top_k"] == 2 and len(task["task_id"]) == 32
    for body, words in ((TaskIn(), "empty task"), (TaskIn(text="x" * 101), "limit is 100")):
        with pytest.raises(RequestError) as err:
            build_task(body, "t", 100)
        assert err.value.status == 422 and words in str(err.value)
