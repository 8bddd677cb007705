import { errorMessage } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';
import { describeDiff, type SchemaVersionReport } from '../ops/schemas.js';
import type { SchemaVersionStatus, StatusResponse } from './api.js';

/** At most this many definitions in the status answer (the newest). */
const MAX_VERSIONS = 50;

/**
 * The recorded table definitions for `/api/status`, read from the source at most once per
 * `refreshMs` (the page polls every second; definitions change at DDL pace) and only while
 * someone asks. A failed read keeps the last list and says why in `note`.
 */
export class SchemaVersionsView {
  private last: StatusResponse['schemas'] = { versions: [], note: 'not read yet' };
  private readAt = Number.NEGATIVE_INFINITY;
  private reading: Promise<void> | null = null;

  constructor(
    private readonly read: () => Promise<SchemaVersionReport[]>,
    private readonly refreshMs = 5000,
    private readonly now: () => number = Date.now,
  ) {}

  async current(): Promise<StatusResponse['schemas']> {
    if (this.now() - this.readAt >= this.refreshMs) {
      this.reading ??= this.refresh().finally(() => (this.reading = null));
      await this.reading;
    }
    return this.last;
  }

  private async refresh(): Promise<void> {
    try {
      const reports = await this.read();
      this.last = { versions: toStatus(reports) };
    } catch (err) {
      this.last = { versions: this.last.versions, note: `source not readable: ${redactUrl(errorMessage(err))}` };
    }
    this.readAt = this.now();
  }
}

/** Newest first (by recording time, then version), at most MAX_VERSIONS. */
export function toStatus(reports: readonly SchemaVersionReport[]): SchemaVersionStatus[] {
  return [...reports]
    .sort((a, b) => b.recordedAt.localeCompare(a.recordedAt) || b.version - a.version || a.table.localeCompare(b.table))
    .slice(0, MAX_VERSIONS)
    .map((r) => ({ table: r.table, version: r.version, first_lsn: r.firstLsn, recorded_at: r.recordedAt, changes: r.diff ? describeDiff(r.diff) : [] }));
}
