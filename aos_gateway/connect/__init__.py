"""Kafka Connect: the sinks that land results, decisions, experience, agent statistics, dead
letters and anomalies in PostgreSQL tables for dashboards (rows in :mod:`.rows`, the REST API in
:mod:`.rest`)."""
