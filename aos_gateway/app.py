"""The Faust application: ``faust -A aos_gateway.app worker`` (or ``aos worker``)."""

from __future__ import annotations

import logging
from pathlib import Path

import faust

from aos_gateway.settings import Settings, get_settings
from aos_gateway.streams.recovery import AosTableManager
from aos_gateway.streams.stages import Pipeline, build
from aos_gateway.topics import TopicSpec


class AosApp(faust.App):
    """Creates the catalog's topics and the tables' changelogs before the worker subscribes to them."""

    aos_settings: Settings

    def changelog_specs(self) -> list[TopicSpec]:
        """The tables' changelog topics as Faust declares them (compacted, the table's partitions).

        Faust creates them itself, but its consumer then subscribes before its metadata has them: a
        fresh worker logged a dozen "Topic ...-changelog not found in cluster metadata" ERROR lines.
        """
        default = self.aos_settings.worker.topic_partitions
        return [
            TopicSpec(
                table.changelog_topic.get_topic_name(),
                record="",  # Faust's own encoding, no contract
                partitions=table.partitions or default,
                compacted=True,
                retention_ms=None,
                doc=f"changelog of the worker's table {table.name}",
            )
            for table in self.tables.values()
        ]

    def _create_directories(self) -> None:
        # Faust creates the last folder only: a data dir under a stack home elsewhere failed the start
        # ("No such file or directory: '.aos/worker'")
        Path(self.conf.datadir).mkdir(parents=True, exist_ok=True)
        super()._create_directories()

    async def on_first_start(self) -> None:
        import asyncio

        from aos_gateway.streams.kafka import ensure_topics
        from aos_gateway.topics import ALL

        s = self.aos_settings
        specs = [*ALL, *self.changelog_specs()]
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: ensure_topics(s.kafka, specs, partitions=s.worker.topic_partitions)
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
