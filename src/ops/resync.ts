import pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { slotOf } from '../config/slot.js';
import { PrerequisiteError } from '../core/errors.js';
import { parseTableName, type TableName } from '../core/sql.js';
import { sourceConnection } from '../compose/source-connection.js';
import { rebaseSourceServer, type Rebase } from '../compose/source-server.js';
import { publicationTables } from '../source/catalog.js';
import { ensurePublication } from '../source/publication.js';
import { slotInAnotherDatabase, slotNameTaken, slotState } from '../source/slot.js';
import { SnapshotStore } from '../source/snapshot-store.js';

/** What `resync` did. */
export interface ResyncResult {
  /** A slot was there and was dropped. */
  dropped: boolean;
  slot: string;
  /** The snapshot jobs queued, one per table. */
  snapshots: string[];
  tables: string[];
  /** The source is another cluster than the target's rows came from: their versions were reset (see compose/source-server.ts). */
  rebased?: Rebase;
}

/**
 * `syncline resync`: recovery from a lost or invalidated slot in one command. It drops the
 * slot (only if lost, or with `force`), creates a fresh one, and queues a snapshot of every
 * table, which the next `syncline run`/`capture` performs while streaming from the new slot.
 * Rows deleted at the source while the slot was lost are then removed by `syncline repair`.
 * When the source is another cluster than the one the target's rows were versioned under (it
 * was moved), the versions of those tables at the target are reset last, so the new
 * cluster's snapshot and changes apply (its LSNs do not compare with the old ones).
 */
export async function resync(config: SynclineConfig, options: { force?: boolean } = {}): Promise<ResyncResult> {
  const slot = slotOf(config);
  const client = new pg.Client(sourceConnection(config));
  await client.connect();
  try {
    const state = await slotState(client, slot.name);
    if (state?.active) throw new PrerequisiteError(`slot ${slot.name} is in use by a running capture`, 'stop syncline run/capture first');
    if (state && state.walStatus !== 'lost' && !options.force) {
      throw new PrerequisiteError(`slot ${slot.name} is healthy (wal_status ${state.walStatus ?? 'unknown'})`, 'nothing to recover; pass --force to rebuild anyway');
    }
    // Another pipeline's slot of this name: creating ours below would fail with the server's bare error.
    if (!state && (await slotInAnotherDatabase(client, slot.name))) throw slotNameTaken(slot.name);
    let tables: TableName[] = slot.tables.map((t) => parseTableName(t));
    // The publication before the slot: the walsender reads it as of each change it decodes, so
    // a slot made while it is missing (dropped, the case capture sends here) fails on every
    // change committed before the next start creates it, as the old slot did. And before the
    // old slot is dropped: refused (a table missing, create_publication off), it keeps the slot.
    await ensurePublication(client, slot.publication, tables, slot.create_publication);
    if (state) await client.query('SELECT pg_drop_replication_slot($1)', [slot.name]);
    const store = new SnapshotStore(client, config.source.state_schema, slot.name);
    await store.prepare();
    if (tables.length === 0) tables = await publicationTables(client, slot.publication, config.source.state_schema);
    // Snapshots first, then the slot: the snapshot's watermarks come after the slot's start.
    const ids: string[] = [];
    for (const t of tables) ids.push(await store.request(t));
    await client.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot.name]);
    // Last: failing before, the target keeps its record and apply keeps refusing the new cluster.
    const rebased = await rebaseSourceServer(config, tables);
    return { dropped: state !== undefined, slot: slot.name, snapshots: ids, tables: tables.map((t) => `${t.schema}.${t.table}`), ...(rebased ? { rebased } : {}) };
  } finally {
    await client.end();
  }
}
