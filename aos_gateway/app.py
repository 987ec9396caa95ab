"""The Faust application: ``faust -A aos_gateway.app worker`` (or ``aos worker``)."""

from __future__ import annotations

import logging

import faust

from aos_gateway.settings import Settings, get_settings
from aos_gateway.streams.recovery import AosTableManager
from aos_gateway.streams.stages import Pipeline, build


class AosApp(faust.App):
    """Creates the catalog's topics before the worker subscribes to them."""

    aos_settings: Settings

    async def on_first_start(self) -> None:
        import asyncio

        from aos_gateway.streams.kafka import ensure_topics

        await asyncio.get_running_loop().run_in_executor(
            None, lambda: ensure_topics(self.aos_settings.kafka, partitions=self.aos_settings.worker.topic_partitions)
        )
        await super().on_first_start()


def create_app(settings: Settings | None = None) -> tuple[AosApp, Pipeline]:
    """A configured app with the pipeline's agents declared."""
    from aos_gateway.security.clients import faust_credentials

    s = settings or get_settings()
    broker = ";".join(f"kafka://{h.strip()}" for h in s.kafka.bootstrap_servers.split(","))
    app = AosApp(
        s.worker.app_id,
        broker=broker,
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=s.worker.topic_partitions,
        datadir=str(s.worker.data_dir),
        store="memory://",
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_client_id=s.kafka.client_id,
        broker_credentials=faust_credentials(s.kafka),  # SASL (SCRAM) as the librdkafka clients: docs/security.md
        producer_linger_ms=s.worker.producer_linger_ms,
        TableManager=AosTableManager,  # recovery that seeks before it delivers: aos_gateway.streams.recovery
    )
    # aiokafka's debug records cost a measurable share of the event loop under load.
    logging.getLogger("aiokafka").setLevel(max(logging.getLogger("aiokafka").getEffectiveLevel(), logging.INFO))
    app.aos_settings = s
    pipe = build(app, s)
    return app, pipe


app, pipeline = create_app()
