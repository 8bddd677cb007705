/** The starter configuration `syncline init` writes: every section, commented. */
export const INIT_TEMPLATE = `# syncline configuration. Check it with: syncline validate -c syncline.yaml
# \${VAR} and \${VAR:-default} are replaced from the environment.
source:
  # Source database (needs wal_level=logical). Or set SYNCLINE_SOURCE_URL.
  url: \${SYNCLINE_SOURCE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
  slots:
    - name: sync_primary          # persistent logical replication slot (created if missing)
      publication: sync_pub       # created for these tables if missing
      tables: [orders, users]     # table or schema.table
stream:
  broker: embedded                # embedded | kafka | nats
  path: ./.syncline/stream        # embedded: where the log lives
  topic: db-changes
  partitions: 6                   # per-row order is kept within a partition (key = table + primary key)
  retention_hours: 168
consumer:
  group_id: sync-workers
  deduplication:
    key_pattern: "sync:{source}:{table}:{lsn}"
  retry:
    max_attempts: 5
    backoff_base_ms: 1000
    backoff_max_ms: 30000
    jitter: true
sink:
  type: postgres
  # Target database; its tables need the source's columns and primary key. Or SYNCLINE_SINK_URL.
  url: \${SYNCLINE_SINK_URL:-postgres://postgres@127.0.0.1:5432/target}
  version_gate: true              # skip changes not newer than the target row (replays are harmless)
  conflict_strategy: source_lsn_priority
  delete_mode: hard               # hard: delete + tombstone; soft: keep the row with _deleted_at
  consistency: eventual           # eventual: per-row order; transactional: whole source transactions in commit order (SQL sinks, one apply)
  schema_evolution: add_columns   # SQL sinks follow source DDL: none | add_columns (adds, renames) | full (+ widenings, drops, missing tables)
  # tables:                       # optional routing and column mapping per source table
  #   public.orders: { target: reporting.orders, columns: { total: amount }, exclude_columns: [note] }
dead_letter:
  enabled: true
  # store: table                  # table (a PostgreSQL table; default unless on Kafka) | topic (Kafka: the compacted topic below)
  topic: db-changes.dlq
  alert_threshold: 50
monitoring:
  host: 127.0.0.1
  port: 9464                      # /metrics and /healthz
  alerts:
    lag_critical: 30
    duplicate_rate_warning: 0.02
    deadletter_critical: 100
`;
