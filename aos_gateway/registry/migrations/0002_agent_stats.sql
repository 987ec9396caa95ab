-- Agent statistics per task cluster, from the STEP records of aos.experience.v1
-- (aos_gateway.experience.stats). cluster -1: a task without a cluster (no vector, no model yet).
CREATE TABLE IF NOT EXISTS agent_stats (
    tenant          text             NOT NULL,
    agent_id        text             NOT NULL,
    cluster         integer          NOT NULL,
    calls           bigint           NOT NULL DEFAULT 0,
    successes       bigint           NOT NULL DEFAULT 0,
    partials        bigint           NOT NULL DEFAULT 0,
    failures        bigint           NOT NULL DEFAULT 0,
    timeouts        bigint           NOT NULL DEFAULT 0,
    latency_ms_sum  bigint           NOT NULL DEFAULT 0,
    latency_ms_max  bigint           NOT NULL DEFAULT 0,
    cost_sum        double precision NOT NULL DEFAULT 0,
    feedback_sum    double precision NOT NULL DEFAULT 0,
    feedback_count  bigint           NOT NULL DEFAULT 0,
    first_at        timestamptz      NOT NULL,
    last_at         timestamptz      NOT NULL,
    updated_at      timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, agent_id, cluster)
);

-- The experience ids already counted: a redelivered record is never counted twice.
CREATE TABLE IF NOT EXISTS agent_stats_applied (
    experience_id   text        PRIMARY KEY,
    tenant          text        NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS agent_stats_applied_tenant ON agent_stats_applied (tenant);
CREATE INDEX IF NOT EXISTS agent_stats_applied_at ON agent_stats_applied (applied_at);
