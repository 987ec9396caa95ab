"""The topic catalog (aos_gateway/topics.py)."""

from __future__ import annotations

from aos_gateway import topics


def test_partitions_follow_the_worker_except_compacted_and_single_ones() -> None:
    """Regression: `ensure_topics(..., partitions=4)` gave the dead-letter topic 4 partitions, while the
    catalog, the k8s manifests and deploy/README say 1 (one ordered stream on purpose)."""
    assert topics.TASKS.partitions_for(8) == 8
    assert topics.TASKS.partitions_for(None) == topics.TASKS.partitions
    assert topics.DEADLETTER.partitions_for(8) == 1
    assert topics.AGENTS.partitions_for(8) == topics.AGENTS.partitions  # compacted
    assert {t.name for t in topics.ALL if t.partitions_for(12) == 12} == {
        t.name for t in topics.ALL if not t.compacted and t.partitions != 1
    }
