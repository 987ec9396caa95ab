"""Per-tenant limits where tasks enter: how fast a tenant may submit tasks, and how large they may be.

Pure logic, no I/O; the clock is a parameter. Used in two places:

- the HTTP ingress refuses a POST over its tenant's rate with a 429 (``Retry-After``), and sizes
  over the tenant's limits with a 422 (text) or a 413 (an image or audio part);
- the perceive stage dead-letters a task over its tenant's size limits, and *meters* a task over
  its tenant's rate without dropping it (``aos_tenant_tasks_over_rate_total``): on Kafka a burst
  at the stage may be a backlog read late (after a restart, a rebalance, a replay) rather than a
  tenant sending fast, so the stage's bucket runs on the tasks' own ``submitted_at`` clock; and
  each worker sees only its partitions' share of a tenant's tasks, so enforcing there would
  neither be exact nor answer anyone. Enforcing on the Kafka path is the broker's job (client
  quotas per principal).

A rate is a token bucket: a tenant starts with ``burst`` tokens, each task takes one, and they come
back at ``tasks_per_s`` up to ``burst``. Limits are set in :class:`~aos_gateway.settings.LimitsSettings`
(``AOS_LIMITS__*``), with per-tenant overrides; a tenant's size limits never exceed the hard limits
every tenant has (``AOS_PERCEPTION__MAX_TEXT_CHARS``, ``AOS_MEDIA__MAX_REF_BYTES``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aos_gateway.contracts.records import TaskRequest
from aos_gateway.errors import MediaError, ValidationError
from aos_gateway.settings import Settings


@dataclass(frozen=True)
class TenantLimits:
    """One tenant's limits, resolved: its overrides, else the defaults, within the hard limits."""

    tasks_per_s: float  # 0: no rate limit
    burst: float
    max_text_chars: int
    max_media_bytes: int


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; :meth:`take` says how long until there are enough."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float, n: float = 1.0) -> float:
        """0.0 when ``n`` tokens were taken; else the seconds until they will be there (none taken).

        A clock that goes back (event time from several producers) refills nothing and loses nothing.
        """
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        if self.rate <= 0 or n > self.burst:
            return math.inf
        return (n - self.tokens) / self.rate


class Limits:
    """Every tenant's limits and rate buckets (thread-safe; buckets of idle tenants are dropped first)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings.limits
        self._hard_text = settings.perception.max_text_chars
        self._hard_media = settings.media.max_ref_bytes
        self._clock = clock
        self._resolved: dict[str, TenantLimits] = {}
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, tenant: str) -> TenantLimits:
        """The tenant's limits."""
        found = self._resolved.get(tenant)
        if found is not None:
            return found
        s = self._settings
        own = s.tenants.get(tenant)
        rate = own.tasks_per_s if own is not None and own.tasks_per_s is not None else s.tasks_per_s
        burst = own.burst if own is not None and own.burst is not None else s.burst
        text = own.max_text_chars if own is not None and own.max_text_chars is not None else s.max_text_chars
        media = own.max_media_bytes if own is not None and own.max_media_bytes is not None else s.max_media_bytes
        out = TenantLimits(
            tasks_per_s=rate,
            burst=float(burst or max(1, math.ceil(rate))),  # 0: one second's worth
            max_text_chars=min(text or self._hard_text, self._hard_text),
            max_media_bytes=min(media or self._hard_media, self._hard_media),
        )
        if own is not None or len(self._resolved) < s.max_tracked_tenants:
            self._resolved[tenant] = out
        return out

    def admit(self, tenant: str, now: float | None = None) -> float:
        """Take one task from the tenant's rate: 0.0 when admitted, else the seconds until it may send again.

        Args:
            tenant: whose rate.
            now: the time in seconds (default: the clock given at construction); the perceive stage
                passes the task's ``submitted_at``, so a backlog read late is not taken for a burst.
        """
        lim = self.of(tenant)
        if lim.tasks_per_s <= 0:
            return 0.0
        t = self._clock() if now is None else now
        with self._lock:
            bucket = self._buckets.get(tenant)
            if bucket is None:
                bucket = self._buckets[tenant] = TokenBucket(lim.tasks_per_s, lim.burst, t)
                if len(self._buckets) > self._settings.max_tracked_tenants:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(tenant)
            return bucket.take(t)

    def check_size(self, task: TaskRequest) -> None:
        """Refuse a task over its tenant's size limits.

        Raises:
            ValidationError: the text is longer than the tenant's ``max_text_chars``.
            MediaError: an image or audio part (inline, or as declared) is larger than its ``max_media_bytes``.
        """
        tenant = task["tenant"]
        lim = self.of(tenant)
        text = (task["text"] or "").strip()
        if len(text) > lim.max_text_chars:
            raise ValidationError(
                f"text has {len(text)} characters, the limit is {lim.max_text_chars} (tenant {tenant!r})"
            )
        for kind in ("image", "audio"):
            part = task[kind]
            if part is None:
                continue
            size = max(len(part["data"] or b""), int(part["size_bytes"] or 0))
            if size > lim.max_media_bytes:
                raise MediaError(f"{kind}: too large: {size} bytes > {lim.max_media_bytes} (tenant {tenant!r})")
