"""Per-tenant limits: the token bucket, limits resolved per tenant, sizes, and the ingress's 429."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from aos_gateway.client import new_task
from aos_gateway.contracts.records import MediaPart
from aos_gateway.errors import MediaError, ValidationError
from aos_gateway.ingress.api import create_app
from aos_gateway.limits import Limits, TokenBucket
from aos_gateway.settings import LimitsSettings, MediaSettings, PerceptionSettings, Settings, TenantLimitSettings
from aos_gateway.streams.metrics import MAX_TENANT_LABELS, Metrics
from tests.unit.ingress.fakes import A, B, FakeFeed, FakeSender, settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _settings(**limits: object) -> Settings:
    return Settings(
        limits=LimitsSettings(**limits),  # type: ignore[arg-type]
        perception=PerceptionSettings(max_text_chars=1000),
        media=MediaSettings(max_ref_bytes=10_000),
    )


def test_a_bucket_gives_its_burst_then_one_token_per_interval() -> None:
    b = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.5)  # one token comes back every 0.5 s
    assert b.take(0.25) == pytest.approx(0.25)  # refusals take nothing
    assert b.take(0.5) == 0.0 and b.take(0.5) == pytest.approx(0.5)
    assert [b.take(100.0) for _ in range(4)][-1] > 0  # refilled to the burst, not beyond


def test_a_clock_that_goes_back_refills_nothing_and_loses_nothing() -> None:
    b = TokenBucket(rate=1.0, burst=1.0, now=10.0)
    assert b.take(10.0) == 0.0
    assert b.take(5.0) == pytest.approx(1.0)  # earlier than the last take: no token, none lost
    assert b.take(11.0) == 0.0


def test_limits_resolve_overrides_defaults_and_hard_caps() -> None:
    lim = Limits(
        _settings(
            tasks_per_s=2.5,
            max_text_chars=500,
            tenants={
                "acme": TenantLimitSettings(tasks_per_s=50, burst=100, max_text_chars=5000, max_media_bytes=20),
                "free": TenantLimitSettings(tasks_per_s=0),
            },
        )
    )
    acme, free, other = lim.of("acme"), lim.of("free"), lim.of("anyone")
    assert (acme.tasks_per_s, acme.burst, acme.max_media_bytes) == (50, 100, 20)
    assert acme.max_text_chars == 1000  # never above the hard limit every tenant has
    assert (free.tasks_per_s, free.max_text_chars) == (0, 500)
    assert (other.tasks_per_s, other.burst, other.max_text_chars, other.max_media_bytes) == (2.5, 3, 500, 10_000)


def test_limits_come_from_the_environment_with_per_tenant_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOS_LIMITS__TASKS_PER_S", "5")
    monkeypatch.setenv("AOS_LIMITS__TENANTS", json.dumps({"acme": {"tasks_per_s": 50, "burst": 100}}))
    s = Settings()
    assert s.limits.tasks_per_s == 5 and s.limits.tenants["acme"].burst == 100
    monkeypatch.setenv("AOS_LIMITS__TENANTS", json.dumps({"acme": {"task_per_s": 50}}))  # misspelt
    with pytest.raises(ValueError, match="task_per_s"):
        Settings()


def test_admit_is_per_tenant_and_off_by_default() -> None:
    clock = Clock()
    assert Limits(_settings(), clock).admit("t") == 0.0  # no rate configured: always admitted
    lim = Limits(_settings(tasks_per_s=1, burst=2, tenants={"big": TenantLimitSettings(burst=5)}), clock)
    assert [lim.admit("a") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert [lim.admit("big") for _ in range(5)] == [0.0] * 5 and lim.admit("big") > 0
    assert lim.admit("b") == 0.0  # another tenant's bucket
    clock.now += 1.0
    assert lim.admit("a") == 0.0 and lim.admit("a") > 0
    assert lim.admit("a", now=clock.now + 10) == 0.0  # an explicit time (the perceive stage's event time)


def test_rate_buckets_are_bounded() -> None:
    lim = Limits(_settings(tasks_per_s=1, burst=1, max_tracked_tenants=3), Clock())
    for t in "abcdef":
        assert lim.admit(t) == 0.0
    assert len(lim._buckets) == 3
    assert lim.admit("a") == 0.0  # dropped as the idlest: starts again with a full bucket


def _image(size: int, declared: int = 0) -> MediaPart:
    return MediaPart(mime_type="image/png", data=b"x" * size, uri=None, size_bytes=declared, sha256=None)


def test_sizes_over_the_tenants_limits_are_refused() -> None:
    lim = Limits(_settings(tenants={"small": TenantLimitSettings(max_text_chars=10, max_media_bytes=100)}))
    lim.check_size(new_task("x" * 10, tenant="small", image=_image(100)))
    lim.check_size(new_task("x" * 11, tenant="other"))
    with pytest.raises(ValidationError, match=r"11 characters, the limit is 10 \(tenant 'small'\)"):
        lim.check_size(new_task("  " + "x" * 11 + "  ", tenant="small"))
    with pytest.raises(MediaError, match=r"image: too large: 101 bytes > 100"):
        lim.check_size(new_task("hi", tenant="small", image=_image(101)))
    ref = MediaPart(mime_type="audio/wav", data=None, uri="file:///x.wav", size_bytes=5000, sha256=None)
    with pytest.raises(MediaError, match="audio: too large: 5000 bytes"):  # a reference, by its declared size
        lim.check_size(new_task("hi", tenant="small", audio=ref))


def test_the_ingress_answers_a_tenant_over_its_rate_with_429_and_retry_after() -> None:
    clock = Clock()
    s = settings()
    s.limits = LimitsSettings(tasks_per_s=0.5, burst=2)
    sender = FakeSender()
    app = create_app(s, sender, FakeFeed(), limits=Limits(s, clock))
    with TestClient(app) as c:
        ok = [c.post("/v1/tasks", json={"text": "hi"}, headers=A).status_code for _ in range(2)]
        assert ok == [202, 202]
        r = c.post("/v1/tasks", json={"text": "hi"}, headers=A)
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert "0.5 per second" in r.json()["error"]
        assert c.post("/v1/tasks", json={"text": "hi"}, headers=B).status_code == 202  # another tenant
        clock.now += 2.0
        assert c.post("/v1/tasks", json={"text": "hi"}, headers=A).status_code == 202
        assert len(sender.sent) == 4
        assert "429" in c.get("/openapi.json").json()["paths"]["/v1/tasks"]["post"]["responses"]


def test_the_ingress_applies_the_tenants_size_limits() -> None:
    s = settings()
    s.limits = LimitsSettings(tenants={"tenant-a": TenantLimitSettings(max_text_chars=5, max_media_bytes=10)})
    with TestClient(create_app(s, FakeSender(), FakeFeed())) as c:
        r = c.post("/v1/tasks", json={"text": "x" * 6}, headers=A)
        assert r.status_code == 422 and "the limit is 5" in r.json()["error"]
        r = c.post("/v1/tasks", files={"image": ("p.png", b"\x89PNG" + b"\x00" * 10, "image/png")}, headers=A)
        assert r.status_code == 413 and "14 bytes > 10" in r.json()["error"]
        assert c.post("/v1/tasks", json={"text": "x" * 6}, headers=B).status_code == 202  # tenant-b: defaults


def test_over_rate_tenant_labels_are_bounded() -> None:
    m = Metrics()
    for i in range(MAX_TENANT_LABELS + 5):
        m.tenant_over_rate(f"t{i}")
    m.tenant_over_rate("t0")
    text = m.render().decode()
    assert 'aos_tenant_tasks_over_rate_total{tenant="t0"} 2.0' in text
    assert 'aos_tenant_tasks_over_rate_total{tenant="_other"} 5.0' in text
