#!/bin/sh
# docker-compose: runs once, when the postgres service initialises an empty data volume
# (/docker-entrypoint-initdb.d). Creates the read-only role Grafana's datasource logs in as:
# Grafana runs whatever SQL a dashboard holds, so it gets SELECT and nothing else — on the
# sink_* tables Kafka Connect creates later, too (default privileges of the owning role).
psql -v ON_ERROR_STOP=1 -X --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v reader="${GRAFANA_DB_USER:-grafana_reader}" \
  -v reader_password="${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD}" \
  -v owner="$POSTGRES_USER" \
  -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
SQL
