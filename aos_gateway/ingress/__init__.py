"""The HTTP ingress (``aos serve``): tasks over HTTP for clients that cannot speak Kafka.

A POST becomes a :class:`~aos_gateway.contracts.records.TaskRequest` on ``aos.tasks.v1``, the
same record ``aos submit`` and :class:`~aos_gateway.client.GatewayClient` produce; one
background consumer per server process reads the plans, execution results and dead letters back
into a bounded memory of recent tasks, and long polls and event streams wait on it.

- :mod:`~aos_gateway.ingress.auth`: API keys -> tenants; which addresses may be served without keys.
- :mod:`~aos_gateway.ingress.tasks`: request bodies (JSON, multipart uploads) -> validated TaskRequests.
- :mod:`~aos_gateway.ingress.results`: the memory of recent tasks and the waiters on it.
- :mod:`~aos_gateway.ingress.kafka`: the producer and the one consumer (the only Kafka code here).
- :mod:`~aos_gateway.ingress.api`: the FastAPI app (routes, errors as ``{"error": ...}``, limits).

Errors: :class:`~aos_gateway.ingress.tasks.RequestError` (an ``AosError`` carrying the HTTP
status to answer with); a request the server refuses never becomes a 500.
"""

from __future__ import annotations
