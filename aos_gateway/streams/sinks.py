"""Rows for Kafka Connect: the gateway's records as schema'd JSON on the ``aos.sink.*.v1`` topics.

sink_<table>  a topic -> aos.sink.<table>.v1 (one Faust agent per source topic)

    aos.plans.v1         -> sink_decisions   (routing decisions with scores and stage latencies)
    aos.results.v1       -> sink_results     (final execution results)
    aos.experience.v1    -> sink_experience  (every experience record, without its vector)
    aos.deadletter.v1    -> sink_deadletters (without the failed bytes)
    aos.weights.v1       -> sink_anomalies   (the agents each learning pass flags)

``sink_agent_stats`` comes from the statistics projection
(:class:`aos_gateway.streams.projections.AgentStatsSink`), after each batch is counted.
Debezium's JDBC sink reads these topics (``connectors/``) and upserts the rows by key, so
redelivery here never duplicates a row there. A record that cannot be turned into a row goes to
the dead-letter topic (a dead letter itself that cannot is only logged: no loop).

restart_failed_connectors  a timer (every ``RESTART_FAILED_EVERY_S``): restarts the failed tasks of
                           the connectors of ``connectors/`` — the JDBC sink's task dies when
                           PostgreSQL goes away (even for seconds) and Kafka Connect never restarts
                           it, so the tables stopped filling for good; restarted, it resumes from
                           its committed offsets and the upserts fill the gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import faust

from aos_gateway import topics
from aos_gateway.connect import rows
from aos_gateway.experience.learning import ANOMALIES as ANOMALIES_STATE
from aos_gateway.settings import ConnectSettings

if TYPE_CHECKING:
    from aos_gateway.streams.stages import Pipeline

log = logging.getLogger("aos_gateway.sinks")

#: a source record -> the rows it gives (none: nothing to land)
RowsOf = Callable[[Any], list[dict[str, Any]]]


def _anomalies(record: Any) -> list[dict[str, Any]]:
    return rows.anomaly_rows(record) if record["name"] == ANOMALIES_STATE else []


#: source topic -> (dashboard table, rows of one record)
ROUTES: dict[str, tuple[rows.SinkTable, RowsOf]] = {
    topics.PLANS.name: (rows.DECISIONS, lambda r: [rows.decision_row(r)]),
    topics.RESULTS.name: (rows.RESULTS, lambda r: [rows.result_row(r)]),
    topics.EXPERIENCE.name: (rows.EXPERIENCE, lambda r: [rows.experience_row(r)]),
    topics.DEADLETTER.name: (rows.DEADLETTERS, lambda r: [rows.deadletter_row(r)]),
    topics.WEIGHTS.name: (rows.ANOMALIES, _anomalies),
}

BATCH = 500
#: how long a batch may wait to fill: the rows' added latency at low rates (0.5 s gave p50 351 ms at 10/s)
WITHIN_S = 0.05
#: how often the connectors' status is checked (a GET; a restart only when a task FAILED)
RESTART_FAILED_EVERY_S = 10.0


def build_sinks(app: faust.App, pipe: Pipeline) -> None:
    """Declare one sink agent per source topic on ``app``, and the connectors' watchdog."""
    for source, (table, rows_of) in ROUTES.items():
        _declare(app, pipe, source, table, rows_of)
    watchdog = ConnectorWatchdog(pipe.settings.connect)

    @app.timer(interval=RESTART_FAILED_EVERY_S)  # type: ignore[untyped-decorator]
    async def restart_failed_connectors() -> None:
        # the default executor: a Connect that does not answer must not hold the projections' I/O threads
        await asyncio.get_running_loop().run_in_executor(None, watchdog.check)


class ConnectorWatchdog:
    """Restarts the failed tasks (or connector) of the connectors this package ships (``connectors/``)."""

    def __init__(self, connect: ConnectSettings) -> None:
        self.connect = connect
        self.restarts = 0
        self._names: set[str] | None = None
        self._unreachable = False

    def check(self) -> list[str]:
        """One look at the status; returns the connectors restarted. Never raises (a timer calls it)."""
        from aos_gateway.connect.rest import ConnectClient, connectors_dir, load_configs

        try:
            if self._names is None:
                self._names = {c.name for c in load_configs(connectors_dir(self.connect.connectors_dir))}
            client = ConnectClient(self.connect.url, min(self.connect.request_timeout_s, 3.0))
            status = client.status()
            restarted = []
            for name in sorted(self._names & set(status)):
                st = status[name]
                failed = [t for t in st.get("tasks", []) if t.get("state") == "FAILED"]
                if failed or st.get("connector", {}).get("state") == "FAILED":
                    trace = str(failed[0].get("trace", "") if failed else "").strip().splitlines()
                    log.warning(
                        "connect: %s has %d failed task(s) (%s); restarting them",
                        name,
                        len(failed),
                        trace[0] if trace else "the connector failed",
                    )
                    client.restart_failed(name)
                    restarted.append(name)
            self.restarts += len(restarted)
            self._unreachable = False
            return restarted
        except Exception as exc:  # Connect away or not deployed: say so once, keep looking
            if not self._unreachable:
                log.info("connect: cannot check the connectors at %s: %s", self.connect.url, exc)
                self._unreachable = True
            return []


def _declare(app: faust.App, pipe: Pipeline, source: str, table: rows.SinkTable, rows_of: RowsOf) -> None:
    stage = f"sink-{table.table.removeprefix('sink_')}"

    async def sink(stream: faust.StreamT[Any]) -> None:
        st = pipe.metrics.stage(stage)
        async for events in stream.take_events(BATCH, within=WITHIN_S):  # type: ignore[attr-defined]
            start_ns = time.time_ns()
            st.received(len(events))
            sent: list[Awaitable[Any]] = []
            for event in events:
                record: Any = None
                try:
                    record = pipe.decode(source, event)
                    encoded = [table.encode(row) for row in rows_of(record)]
                except Exception as exc:
                    if source == topics.DEADLETTER.name:
                        log.warning("%s: a dead letter cannot be landed (%s: %s)", stage, type(exc).__name__, exc)
                        st.error(exc)
                        continue
                    tid = record.get("task_id") if isinstance(record, dict) else None
                    sent.append(await pipe.send_dead_letter(stage, event, exc, tid))
                    continue
                for key, value in encoded:
                    sent.append(await pipe.send(table.topic, key, value))
                st.emitted(len(encoded))
            if sent:
                await asyncio.gather(*sent)  # acknowledged before the source offsets move on
            st.done(start_ns, len(events))

    app.agent(pipe.topics[source], name=stage.replace("-", "_"))(sink)
