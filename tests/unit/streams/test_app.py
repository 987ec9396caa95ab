from __future__ import annotations

from pathlib import Path

from aos_gateway import topics
from aos_gateway.app import create_app
from aos_gateway.settings import KafkaSettings, Settings


def test_app_declares_the_stages_on_the_catalog_topics() -> None:
    app, pipe = create_app(Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1,127.0.0.2:2")))
    sources = {name: tuple(agent.channel.topics) for name, agent in app.agents.items()}
    exp = (topics.EXPERIENCE.name,)
    assert sources == {
        "perceive_task": (topics.TASKS.name,),
        "match_agents": (topics.PERCEIVED.name,),
        "plan_task": (topics.MATCHED.name,),
        "record_card": (topics.AGENTS.name,),
        "dispatch_plans": (topics.PLANS.name, topics.INVOCATION_RESULTS.name),
        "project_cold": exp,
        "project_stats": exp,
        "project_hot": exp,
        "feedback_to_experience": (topics.FEEDBACK.name,),
        "sink_decisions": (topics.PLANS.name,),
        "sink_results": (topics.RESULTS.name,),
        "sink_experience": exp,
        "sink_deadletters": (topics.DEADLETTER.name,),
        "sink_anomalies": (topics.WEIGHTS.name,),
    }
    assert "aos-plan-dedupe" in app.tables and "aos-executions" in app.tables
    assert [str(u) for u in app.conf.broker] == ["kafka://127.0.0.1:1", "kafka://127.0.0.2:2"]
    assert set(pipe.codecs) == {t.name for t in topics.CATALOG}


def test_the_tables_changelogs_are_created_with_the_catalog_as_faust_names_them() -> None:
    app, _ = create_app(Settings())
    specs = {s.name: s for s in app.changelog_specs()}
    assert set(specs) == {t.changelog_topic.get_topic_name() for t in app.tables.values()}
    assert set(specs) == {"aos-gateway-aos-plan-dedupe-changelog", "aos-gateway-aos-executions-changelog"}
    for spec in specs.values():
        assert spec.compacted and spec.configs()["cleanup.policy"] == "compact"
        assert spec.partitions == Settings().worker.topic_partitions


def test_the_worker_creates_a_nested_data_dir(tmp_path: Path) -> None:
    """Regression: Faust creates only the last folder; '<home>/worker' under a missing home failed."""
    from aos_gateway.settings import WorkerSettings

    where = tmp_path / "home" / "deep" / "worker"
    app, _ = create_app(Settings(worker=WorkerSettings(data_dir=where)))
    app._create_directories()
    assert where.is_dir()
