"""Experience: stores, statistics and mining (no Kafka imports)."""
