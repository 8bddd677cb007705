import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { createPipeline, type Pipeline, type PipelineOptions } from '../../src/index.js';
import type { SynclineConfigInput } from '../../src/api/config.js';

/** One direction (or one source of a fan-in): source database → embedded stream → postgres sink (or `sink.type`'s). */
export interface Direction {
  /** `source.name`, also in slot, publication and stream names. */
  name: string;
  sourceUrl: string;
  sinkUrl: string;
  dir: string;
  tables: string[];
  /** Extra `source` and `sink` keys. */
  source?: Record<string, unknown>;
  sink?: Record<string, unknown>;
  resolveConflict?: PipelineOptions['resolveConflict'];
  /** Dead letters in the sink database (default: off, a poison change stops the pipeline). */
  deadLetters?: boolean;
}

export function direction(d: Direction): Pipeline {
  const config = {
    source: {
      name: d.name,
      url: d.sourceUrl,
      slots: [{ name: `${d.name}_slot`, publication: `${d.name}_pub`, tables: d.tables }],
      heartbeat_interval_ms: 1000,
      snapshot: 'never',
      ...d.source,
    },
    stream: { broker: 'embedded', path: path.join(d.dir, d.name), partitions: 3 },
    consumer: { group_id: d.name, batch_wait_ms: 5, retry: { backoff_base_ms: 10, backoff_max_ms: 200 } },
    sink: { type: 'postgres', url: d.sinkUrl, copy_threshold: 0, ...d.sink },
    dead_letter: d.deadLetters ? { url: d.sinkUrl } : { enabled: false },
    monitoring: { enabled: false },
  } as SynclineConfigInput;
  return createPipeline({ config, role: 'run', ...(d.resolveConflict ? { resolveConflict: d.resolveConflict } : {}) });
}

/** `sync_events_captured_total` summed over tables. */
export async function captured(p: Pipeline): Promise<number> {
  const text = await p.metrics.registry.metrics();
  let n = 0;
  for (const m of text.matchAll(/^sync_events_captured_total\{[^}]*\} (\d+)/gm)) n += Number(m[1]);
  return n;
}

/** Rows of `table` without syncline's columns, ordered by id, as text. */
export async function rowsOf(url: string, sql: string): Promise<string> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query(sql);
    return JSON.stringify(rows);
  } finally {
    await c.end();
  }
}

/** Drops the slot of `name` and the replication origins named (both are the cluster's, not the database's). */
export async function dropSlot(url: string, name: string, origins: string[] = []): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [`${name}_slot`]);
    await c.query('SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = ANY($1::text[])', [origins]);
  } finally {
    await c.end();
  }
}

/** Drops test databases (their slots gone first), leaving nothing behind on the shared server. */
export async function dropDatabases(adminUrl: string, names: string[]): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    for (const name of names) {
      await c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [name]);
      await c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
    }
  } finally {
    await c.end();
  }
}

/**
 * The active-active tests' table: a counter (`hits`, merged by delta, so REPLICA IDENTITY
 * FULL sends its old value) and the application's last-write clock, `rows` seeded alike.
 */
export async function createAccounts(url: string, rows: number): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(`CREATE TABLE accounts (id integer PRIMARY KEY, name text NOT NULL, hits bigint NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL);
                   ALTER TABLE accounts REPLICA IDENTITY FULL;
                   INSERT INTO accounts SELECT g, 'seed', 0, '2020-01-01 00:00:00+00' FROM generate_series(1, ${rows}) g`);
  } finally {
    await c.end();
  }
}

/** `from`..`to` inclusive. */
export const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * One side of an active-active workload on `accounts`: `rounds` UPDATEs, each of some of
 * its `own` rows and most of the 20 shared ones (ids 1..20), setting `name` to
 * `<label>-<round>`, counting `hits` up and `updated_at` to the clock; `afterRound` runs
 * after each (a pause, a kill). Returns how many row increments it made.
 */
export async function updateRounds(url: string, label: string, own: number[], rounds: number, afterRound: (round: number) => Promise<void>): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  let changed = 0;
  try {
    for (let r = 0; r < rounds; r++) {
      const shared = range(1, 20).filter((id) => (id + r) % 3 !== 0);
      const ids = [...own.filter((id) => (id + r) % 2 === 0), ...shared];
      // The sink locks the same rows to apply the other side's changes: a deadlock aborts one
      // of the two, and an application retries its statement (it rolled back whole).
      for (;;) {
        try {
          const res = await c.query(`UPDATE accounts SET name = $1, hits = hits + 1, updated_at = clock_timestamp() WHERE id = ANY($2::int[])`, [`${label}-${r}`, ids]);
          changed += res.rowCount ?? 0;
          break;
        } catch (err) {
          if ((err as { code?: string }).code !== '40P01') throw err;
        }
      }
      await afterRound(r);
    }
  } finally {
    await c.end();
  }
  return changed;
}

/** Runs one statement on `url` over a connection of its own. */
export async function execSql(url: string, sql: string, params: unknown[] = []): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(sql, params);
  } finally {
    await c.end();
  }
}

/** The fan-in tests' source (and target) table. */
export const FAN_IN_ITEMS = 'CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, qty integer NOT NULL)';

/**
 * The fan-in workload of three sources at once: source i (0-based) inserts its own 30 rows
 * (ids i*30+1 ..) named `s<i+1>`, then in rounds (source 3: six, the others two, so its LSNs
 * grow largest) writes the ten shared keys 100..109 (`s<i+1>-shared`, qty the round) and
 * counts its own rows up.
 */
export async function fanInWrites(urls: readonly string[]): Promise<void> {
  await Promise.all(
    urls.map(async (url, i) => {
      const own = range(i * 30 + 1, i * 30 + 30);
      await execSql(url, `INSERT INTO items SELECT g, $1, 1 FROM unnest($2::int[]) g`, [`s${i + 1}`, own]);
      for (let round = 0; round < (i === 2 ? 6 : 2); round++) {
        await execSql(url, `INSERT INTO items SELECT g, $1, $2 FROM generate_series(100, 109) g ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, qty = EXCLUDED.qty`, [`s${i + 1}-shared`, round]);
        await execSql(url, `UPDATE items SET qty = qty + 1 WHERE id = ANY($1::int[])`, [own]);
      }
    }),
  );
}

/** The target's rows after fanInWrites with source_priority s2, s1, s3: own rows as written, the shared keys s2's last. */
export function fanInPriorityExpected(): { id: number; name: string; qty: number }[] {
  return [
    ...range(1, 90).map((id) => ({ id, name: `s${Math.floor((id - 1) / 30) + 1}`, qty: Math.floor((id - 1) / 30) === 2 ? 7 : 3 })),
    ...range(100, 109).map((id) => ({ id, name: 's2-shared', qty: 1 })),
  ];
}

/**
 * Every write syncline makes that sets a new version on a row (its own transaction id in
 * `_syncline_xid`, a version other than the row had), by source and version: a change
 * written twice would appear twice. Counter merges into a winning stored version keep the
 * stored version and are not version writes.
 */
export const AUDIT = `
  ALTER TABLE accounts ADD COLUMN _syncline_lsn pg_lsn, ADD COLUMN _syncline_seq integer, ADD COLUMN _syncline_source text,
                       ADD COLUMN _syncline_ts timestamptz, ADD COLUMN _syncline_xid bigint;
  CREATE TABLE applied_audit (id bigserial PRIMARY KEY, src text, lsn pg_lsn, seq integer, op text);
  CREATE FUNCTION audit_applied() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    IF NEW._syncline_xid = (pg_current_xact_id()::text::bigint % 4294967296)
       AND (TG_OP = 'INSERT' OR (OLD._syncline_source, OLD._syncline_lsn, OLD._syncline_seq) IS DISTINCT FROM (NEW._syncline_source, NEW._syncline_lsn, NEW._syncline_seq)) THEN
      INSERT INTO applied_audit (src, lsn, seq, op) VALUES (NEW._syncline_source, NEW._syncline_lsn, NEW._syncline_seq, TG_OP);
    END IF;
    RETURN NEW;
  END $$;
  CREATE TRIGGER audit_applied AFTER INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION audit_applied();`;

type Pair<T> = Record<'a' | 'b', T>;

/**
 * The configs of a bidirectional pair of `syncline run` processes on table `accounts`
 * (`<dir>/a.yaml` is a → b: capture at a, sink at b; `b.yaml` the other way round): origins
 * skipped, last_write_wins on `updated_at`, `hits` a delta counter, each its own metrics port.
 */
export async function writePairConfigs(dir: string, names: Pair<string>, urls: Pair<string>, ports: Pair<number>): Promise<void> {
  for (const [from, to] of [['a', 'b'], ['b', 'a']] as const) {
    await writeFile(
      path.join(dir, `${from}.yaml`),
      `source:
  name: ${names[from]}
  url: ${urls[from]}
  slots: [{ name: ${names[from]}_slot, publication: ${names[from]}_pub, tables: [accounts] }]
  skip_origins: true
  heartbeat_interval_ms: 1000
  snapshot: never
stream: { broker: embedded, path: ${path.join(dir, `stream-${from}`)}, partitions: 3 }
consumer: { group_id: ${names[from]}, batch_wait_ms: 5, retry: { backoff_base_ms: 10, backoff_max_ms: 200 } }
sink:
  type: postgres
  url: ${urls[to]}
  copy_threshold: 0
  origin: from_${names[from]}
  local_source: ${names[to]}
  conflict_strategy: last_write_wins
  lww_column: updated_at
  delta_columns: { accounts: [hits] }
dead_letter: { url: ${urls[to]} }
monitoring: { enabled: true, port: ${ports[from]} }
`,
    );
  }
}
