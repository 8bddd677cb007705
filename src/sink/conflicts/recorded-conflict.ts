/**
 * One row of a SQL sink's conflicts table (`<state_schema>.conflicts`, or
 * `<state_schema>_conflicts` on mysql and sqlite) as `syncline conflicts list` reads it, with
 * every sink's values in PostgreSQL's forms: the id as text, the LSN as `X/Y`, the versions
 * parsed from their JSON.
 */
export interface RecordedConflictRow {
  id: string;
  detected_at: string;
  table_name: string;
  row_key: string;
  strategy: string;
  winner: string;
  incoming_source: string;
  stored_source: string;
  /** `X/Y`, as PostgreSQL prints an LSN. */
  incoming_lsn: string;
  incoming_clock: string | null;
  stored_clock: string | null;
  incoming_version: unknown;
  stored_version: unknown;
  written: unknown;
}
