import type pg from 'pg';
import { PrerequisiteError } from '../core/errors.js';
import { parseLsn, type Lsn } from '../core/lsn.js';

export interface SlotState {
  name: string;
  plugin: string;
  active: boolean;
  /** The walsender streaming the slot, when active. */
  activePid: number | null;
  confirmedFlush: Lsn | null;
  /** WAL between the server's current position and the slot's confirmed position. */
  lagBytes: bigint | null;
  /** Bytes of WAL the server keeps for this slot (current LSN − restart LSN); null once lost. */
  retainedBytes: bigint | null;
  walStatus: string | null;
}

export async function slotState(client: pg.ClientBase, name: string): Promise<SlotState | undefined> {
  const { rows } = await client.query<{ plugin: string; active: boolean; active_pid: number | null; confirmed: string | null; lag: string | null; retained: string | null; wal_status: string | null }>(
    `SELECT plugin, active, active_pid, confirmed_flush_lsn::text AS confirmed,
            pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text AS lag,
            pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained, wal_status
       FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`,
    [name],
  );
  const r = rows[0];
  if (!r) return undefined;
  return {
    name,
    plugin: r.plugin,
    active: r.active,
    activePid: r.active_pid,
    confirmedFlush: r.confirmed ? parseLsn(r.confirmed) : null,
    lagBytes: r.lag === null ? null : BigInt(r.lag),
    retainedBytes: r.retained === null ? null : BigInt(r.retained),
    walStatus: r.wal_status,
  };
}

/** The server's current WAL position, as PostgreSQL prints it. */
export async function currentWalLsn(client: pg.ClientBase): Promise<string | undefined> {
  const { rows } = await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  return rows[0]?.lsn;
}

/**
 * A slot of this name exists in another database of the server (slot names are the
 * server's): none of that name can be made in this one.
 */
export async function slotInAnotherDatabase(client: pg.ClientBase, name: string): Promise<boolean> {
  const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1 AND database IS DISTINCT FROM current_database()', [name]);
  return (rows[0]?.n ?? 0) > 0;
}

/** The slot's name is taken in another database (see slotInAnotherDatabase). */
export function slotNameTaken(name: string): PrerequisiteError {
  return new PrerequisiteError(`replication slot ${name} exists in another database`, 'use another slot name, or drop that slot');
}

/**
 * Creates a persistent pgoutput slot unless it exists; refuses a slot of another plugin or a
 * lost one. `known`: the slot's state as the caller just read it (saves reading it again).
 */
export async function ensureSlot(client: pg.Client, name: string, known?: SlotState): Promise<{ created: boolean; state: SlotState }> {
  let state = known ?? (await slotState(client, name));
  let created = false;
  if (!state) {
    if (await slotInAnotherDatabase(client, name)) throw slotNameTaken(name);
    await client.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [name]);
    created = true;
    state = await slotState(client, name);
    if (!state) throw new Error(`slot ${name} vanished right after creation`);
  }
  if (state.plugin !== 'pgoutput') {
    throw new PrerequisiteError(`replication slot ${name} uses plugin ${state.plugin}, syncline needs pgoutput`, `drop it (SELECT pg_drop_replication_slot('${name}')) or choose another slot name`);
  }
  if (state.walStatus === 'lost') {
    throw new PrerequisiteError(`replication slot ${name} is lost: the server removed WAL it still needed`, 'run: syncline resync -c <config> (new slot + snapshot of every table), then syncline run, then syncline repair');
  }
  return { created, state };
}
