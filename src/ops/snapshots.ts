import pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { slotOf, type SlotConfig } from '../config/slot.js';
import { quoteQualified } from '../core/sql.js';
import { resolveTableArgAsync } from '../core/table-arg.js';
import { sourceConnection } from '../compose/source-connection.js';
import { addPublicationTable } from '../source/publication.js';
import { SnapshotStore, type SnapshotJob } from '../source/snapshot-store.js';

/**
 * `syncline snapshot`: snapshot jobs of the configured slot, which the running capture
 * performs while streaming continues (see SnapshotStore). One source connection; close() it.
 */
export class SnapshotRequests {
  private constructor(
    private readonly client: pg.Client,
    private readonly store: SnapshotStore,
    private readonly slot: SlotConfig,
  ) {}

  static async open(config: SynclineConfig): Promise<SnapshotRequests> {
    const slot = slotOf(config);
    const client = new pg.Client(sourceConnection(config));
    await client.connect();
    try {
      const store = new SnapshotStore(client, config.source.state_schema, slot.name);
      await store.prepare();
      return new SnapshotRequests(client, store, slot);
    } catch (err) {
      await client.end();
      throw err;
    }
  }

  /** Every job of the slot. */
  all(): Promise<SnapshotJob[]> {
    return this.store.all();
  }

  /** Cancels the unfinished jobs among `ids`; returns the ids cancelled. */
  cancel(ids: readonly string[]): Promise<string[]> {
    return this.store.cancel(ids);
  }

  /** The jobs of `ids` that exist. */
  jobs(ids: readonly string[]): Promise<SnapshotJob[]> {
    return this.store.getMany(ids);
  }

  /**
   * Queues a snapshot of `table` (or of its first key column's range `from`..`to`). A table
   * not yet in the publication is added first, which is how a table added later gets its
   * existing rows.
   */
  async request(table: string, from: string | null, to: string | null): Promise<{ id: string; table: string; addedToPublication: string | undefined }> {
    // As printed or as SQL: the reading that names a table of the source (see parseTableArg).
    const t = await resolveTableArgAsync(table, async (n) => (await this.client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [quoteQualified(n.schema, n.table)])).rows[0]?.t != null);
    const added = await addPublicationTable(this.client, this.slot.publication, t);
    return { id: await this.store.request(t, from, to), table: `${t.schema}.${t.table}`, addedToPublication: added ? this.slot.publication : undefined };
  }

  async close(): Promise<void> {
    await this.client.end();
  }
}
