/**
 * The JSON shape of a dead-letter entry in `syncline dlq list --json` and the dashboard's
 * `/api/dlq` (errors redacted). It imports nothing: the dashboard's browser code shares it.
 */
export interface DeadLetterSummary {
  id: string;
  table: string;
  key: string;
  /** null when the stream record could not be decoded. */
  op: string | null;
  commit_lsn: string | null;
  seq: number | null;
  error_code: string;
  error: string;
  attempts: number;
  /** ISO 8601. */
  first_failed_at: string;
  last_failed_at: string;
  stream_partition: number;
  stream_offset: string;
}
