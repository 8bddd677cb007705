import type { DeadLetterSummary } from '../dlq/summary.js';

/**
 * The dashboard's JSON API, shared by the server (routes.ts and its parts) and the page
 * (ui/app.ts). Types only, and no import that needs Node: tsconfig.ui.json checks this file
 * with the DOM library alone. The snake_case names are the API's (README, "Dashboard").
 */

/** `GET /api/status`. */
export interface StatusResponse {
  /** ISO 8601, when the answer was made. */
  time: string;
  uptime_seconds: number;
  /** Sorted by table name. */
  tables: TableStatus[];
  totals: {
    captured: number;
    published: number;
    consumed: number;
    applied: number;
    stale: number;
    duplicate: number;
    retried: number;
    deadlettered: number;
  };
  /** The worst table's `sync_lag_seconds`. */
  lag_seconds: number;
  throughput: { captured_per_s: number; applied_per_s: number; window_seconds: number };
  duplicate_rate: number;
  dlq: {
    enabled: boolean;
    depth: number;
    oldest_age_seconds: number;
    /** Tables held because their target does not fit (sync_table_blocked). */
    blocked_tables: string[];
    /** Why the depth is what it is, e.g. "not created yet". */
    note?: string;
  };
  slot: { retained_wal_bytes: number };
  /** Formatted LSNs (`16/B374D848`); null before the first. */
  lsn: { capture: string | null; apply: string | null };
  actions: {
    /** A token is configured and the dead-letter queue is on: purge works. */
    enabled: boolean;
    /** Replay works too (this process has a sink). */
    replay: boolean;
    /** How to enable the actions, when they are off for want of a token. */
    hint?: string;
  };
  /** The table definitions capture recorded (what `syncline schemas` lists). */
  schemas: {
    /** Newest first, at most the 50 newest. */
    versions: SchemaVersionStatus[];
    /** Why the list is empty or old, e.g. "source not reachable: ...". */
    note?: string;
  };
  sample_interval_ms: number;
  /** The history ring, oldest first. */
  samples: StatusSample[];
}

/** One definition of a table (`_schema_version`) and what changed from the one before. */
export interface SchemaVersionStatus {
  /** `schema.table`. */
  table: string;
  version: number;
  /** Formatted LSN where capture first met the definition. */
  first_lsn: string;
  /** ISO 8601. */
  recorded_at: string;
  /** One line per column change against the previous version (`+ extra numeric(10,2)`, `- legacy text`, `~ note renamed to remark`, `~ v integer -> bigint`); empty for a table's first version. */
  changes: string[];
}

export interface TableStatus {
  table: string;
  captured: number;
  applied: number;
  stale: number;
  duplicate: number;
  /** null when nothing of the table was applied yet. */
  lag_seconds: number | null;
}

/** One point of the history ring, taken every `sample_interval_ms`. */
export interface StatusSample {
  /** Unix milliseconds. */
  t: number;
  lag_seconds: number;
  captured_per_s: number;
  applied_per_s: number;
}

/** `GET /api/dlq?limit=N`. */
export interface DlqListResponse {
  enabled: boolean;
  /** Absent when the queue is disabled. */
  limit?: number;
  entries: DeadLetterSummary[];
  note?: string;
}

export type { DeadLetterSummary };

/** The two actions, `POST /api/dlq/replay` and `POST /api/dlq/purge`. */
export type DlqAction = 'replay' | 'purge';

/** The body of both actions. */
export interface DlqActionRequest {
  ids: string[];
}

/** `POST /api/dlq/purge`. */
export interface PurgeResponse {
  ok: true;
  purged: number;
  /** Requested ids that were not in the queue. */
  missing: string[];
}

/** `POST /api/dlq/replay`: see dlq/replay.ts's ReplayResult. */
export interface ReplayResponse {
  /** Every entry found was applied (or was stale). */
  ok: boolean;
  replayed: number;
  stale: number;
  failed: { id: string; error: string }[];
  held: string[];
  undecodable: string[];
  missing: string[];
}

/** Every answer other than 200. */
export interface ErrorResponse {
  error: string;
}
