-- Every version of every agent card, as seen on the compacted registry topic.
CREATE TABLE IF NOT EXISTS agent_card_versions (
    agent_id        text        NOT NULL,
    version         integer     NOT NULL,
    card            jsonb,                      -- NULL for a deregistration (tombstone)
    card_sha256     text,
    deregistered    boolean     NOT NULL DEFAULT false,
    source_partition integer    NOT NULL,
    source_offset   bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, version),
    UNIQUE (source_partition, source_offset)
);

-- The latest state of every agent (one row per agent).
CREATE TABLE IF NOT EXISTS agents (
    agent_id        text        PRIMARY KEY,
    name            text        NOT NULL,
    tenant          text        NOT NULL,
    status          text        NOT NULL,
    version         integer     NOT NULL,
    deregistered    boolean     NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
