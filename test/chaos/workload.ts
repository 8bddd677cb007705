import type pg from 'pg';
import { Prng } from './prng.js';
import { X_COLUMNS } from './schema.js';

/**
 * Workload features; each can be left out (`--exclude`) to isolate a failure. `keychange`:
 * primary-key updates of comp and items; `toastkey`: of toast rows, leaving the TOASTed value
 * unchanged (capture must fetch it).
 */
export const FEATURES = ['comp', 'keyless', 'toast', 'keychange', 'toastkey', 'delreinsert', 'savepoint', 'truncate', 'large', 'ddl', 'snapshot'] as const;
export type Feature = (typeof FEATURES)[number];

export interface WorkloadStats {
  writers: number;
  transactions: number;
  committed: number;
  rolledBack: number;
  /** Transactions rolled back because PostgreSQL chose them as a deadlock victim (40P01). */
  deadlocks: number;
  /** REPEATABLE READ transactions rolled back on a concurrent update (40001). */
  serializationFailures: number;
  /** Transactions rolled back because another writer took the key first (23505). */
  uniqueViolations: number;
  savepointRollbacks: number;
  largeTransactions: number;
  ddl: number;
  truncates: number;
  keyChanges: number;
  deleteReinserts: number;
  errors: string[];
}

export function emptyStats(writers = 0): WorkloadStats {
  return {
    writers, transactions: 0, committed: 0, rolledBack: 0, deadlocks: 0, serializationFailures: 0, uniqueViolations: 0,
    savepointRollbacks: 0, largeTransactions: 0, ddl: 0, truncates: 0, keyChanges: 0, deleteReinserts: 0, errors: [],
  };
}

const COMP_A = 40;
const COMP_B = 25;
const TOAST_IDS = 300;
const ITEM_IDS = 4000;
const KEYLESS_G = 50;
/**
 * Each key is drawn from a small hot range shared by every writer this often, so that
 * concurrent writers wait for each other's row locks and, touching two hot keys in opposite
 * orders, deadlock.
 */
const HOT = 0.3;
const HOT_ITEMS = 24;
const HOT_COMP_A = 4;
const HOT_TOAST = 12;
const HOT_G = 4;
/** Share of transactions run at REPEATABLE READ (a concurrent update of a row they write fails them with 40001). */
const REPEATABLE_READ = 0.15;

/** What the writers share: the counters, and how many x columns the DDL writer committed. */
interface Shared {
  stats: WorkloadStats;
  columns: number;
}

/**
 * The seeded random workload on the source: `writers` connections, each running the same
 * random transaction mix from its own PRNG (forked from the scenario's by writer number, and
 * one PRNG per transaction drawn from it, so a transaction's statements are the same for the
 * same seed whatever happened before it; how the writers interleave is not). Keys are drawn
 * partly from hot ranges all writers share, so writers wait on each other's locks and
 * deadlock. A transaction that fails with a deadlock, a serialization failure or a unique
 * violation (two writers took the same free key) is rolled back and counted: it never
 * committed, so the target must not show it. Otherwise every statement tolerates the row it
 * aims at being absent (or present), so the workload never errors whatever the timing; the
 * comparison is against the source itself, not a model of it.
 */
export class ChaosWorkload {
  readonly stats: WorkloadStats;
  private readonly writers: ChaosWriter[];

  constructor(dbs: readonly pg.Client[], rnd: Prng, features: ReadonlySet<Feature>, log: (line: string) => void) {
    const shared: Shared = { stats: emptyStats(dbs.length), columns: 0 };
    this.stats = shared.stats;
    this.writers = dbs.map((db, i) => new ChaosWriter(i, db, rnd.fork(`writer-${i}`), features, shared, log));
  }

  start(paceMs: number): void {
    for (const w of this.writers) w.start(paceMs);
  }

  async stop(): Promise<void> {
    await Promise.all(this.writers.map((w) => w.stop()));
  }

  /** Committed transactions per writer (to show that they all wrote). */
  perWriter(): number[] {
    return this.writers.map((w) => w.committed);
  }
}

/** Why a transaction failed, when it is an expected outcome of concurrent writers. */
function conflictOf(err: unknown): 'deadlocks' | 'serializationFailures' | 'uniqueViolations' | undefined {
  const code = (err as { code?: string }).code;
  if (code === '40P01') return 'deadlocks';
  if (code === '40001') return 'serializationFailures';
  if (code === '23505') return 'uniqueViolations';
  return undefined;
}

/** One connection running random transactions. Writer 0 alone does DDL (one ALTER per column). */
class ChaosWriter {
  committed = 0;
  private stopped = false;
  private running: Promise<void> | undefined;
  private readonly tables: string[];
  /** The current transaction's PRNG. */
  private rnd: Prng;

  constructor(
    private readonly n: number,
    private readonly db: pg.Client,
    private readonly writerRnd: Prng,
    private readonly features: ReadonlySet<Feature>,
    private readonly shared: Shared,
    private readonly log: (line: string) => void,
  ) {
    this.tables = ['items', ...(['comp', 'keyless', 'toast'] as const).filter((t) => features.has(t))];
    this.rnd = writerRnd;
  }

  private get stats(): WorkloadStats {
    return this.shared.stats;
  }

  private has(f: Feature): boolean {
    return this.features.has(f);
  }

  start(paceMs: number): void {
    this.running = (async () => {
      while (!this.stopped) {
        await this.transaction();
        if (paceMs > 0) await new Promise((r) => setTimeout(r, this.writerRnd.int(0, paceMs)));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  /** A key in [1, max], from the shared hot range [1, hot] now and then. */
  private key(max: number, hot: number): number {
    return this.rnd.chance(HOT) ? this.rnd.int(1, hot) : this.rnd.int(1, max);
  }

  /** One random transaction. */
  async transaction(): Promise<void> {
    this.stats.transactions++;
    this.rnd = new Prng(this.writerRnd.int(0, 2 ** 32 - 1));
    const isolation = this.rnd.chance(REPEATABLE_READ) ? 'BEGIN ISOLATION LEVEL REPEATABLE READ' : 'BEGIN';
    const kind = this.rnd.weighted({
      small: 70,
      savepoint: this.has('savepoint') ? 10 : 0,
      abort: 3,
      // Thousands of row changes each: N writers run them sqrt(N) times as often in all as one
      // (so that they overlap), not N times (which swamps a small machine).
      large: this.has('large') ? 2.5 / Math.sqrt(this.shared.stats.writers) : 0,
      // As often in all as with one writer: each empties a whole table.
      truncate: this.has('truncate') ? 0.7 / this.shared.stats.writers : 0,
    });
    let addsColumn = false;
    try {
      await this.db.query(isolation);
      switch (kind) {
        case 'small':
          for (let i = this.rnd.int(1, 8); i > 0; i--) await this.step();
          break;
        case 'savepoint': {
          for (let i = this.rnd.int(0, 3); i > 0; i--) await this.step();
          await this.db.query('SAVEPOINT s1');
          for (let i = this.rnd.int(1, 5); i > 0; i--) await this.step();
          if (this.rnd.chance(0.5)) {
            await this.db.query('SAVEPOINT s2');
            for (let i = this.rnd.int(1, 3); i > 0; i--) await this.step();
            await this.db.query(this.rnd.chance(0.5) ? 'RELEASE SAVEPOINT s2' : 'ROLLBACK TO SAVEPOINT s2');
          }
          await this.db.query('ROLLBACK TO SAVEPOINT s1');
          this.stats.savepointRollbacks++;
          for (let i = this.rnd.int(0, 3); i > 0; i--) await this.step();
          break;
        }
        case 'abort':
          for (let i = this.rnd.int(1, 5); i > 0; i--) await this.step();
          await this.db.query('ROLLBACK');
          this.stats.rolledBack++;
          return;
        case 'large':
          addsColumn = await this.large();
          break;
        case 'truncate': {
          const t = this.rnd.pick(this.tables);
          await this.db.query(`TRUNCATE ${t}`);
          this.stats.truncates++;
          this.log(`workload: writer ${this.n}: TRUNCATE ${t}`);
          for (let i = this.rnd.int(0, 4); i > 0; i--) await this.step();
          break;
        }
      }
      await this.db.query('COMMIT');
      this.stats.committed++;
      this.committed++;
      if (addsColumn) {
        this.shared.columns++;
        this.stats.ddl++;
      }
    } catch (err) {
      const conflict = conflictOf(err);
      if (conflict) this.stats[conflict]++;
      else this.stats.errors.push(`writer ${this.n} ${kind}: ${(err as Error).message}`);
      await this.db.query('ROLLBACK').catch(() => undefined);
    }
  }

  /** A transaction of thousands of changes (streamed before commit at 64 kB), with DDL in the middle. */
  private async large(): Promise<boolean> {
    this.stats.largeTransactions++;
    const from = this.rnd.int(1, ITEM_IDS - 1500);
    const n = this.rnd.int(500, 1500);
    const salt = this.rnd.int(0, 1e6);
    const upsert = `INSERT INTO items (id, grp, val, amount, flag, ts)
      SELECT g, g % 13, repeat(md5((g + ${salt})::text), 3), ((g * 7 + ${salt}) % 100000) / 8.0, (g + ${salt}) % 2 = 0,
             timestamptz '2024-01-01 00:00:00+00' + ((g * 7919 + ${salt}) * interval '1 microsecond')
        FROM generate_series($1::bigint, $2::bigint) g
      ON CONFLICT (id) DO UPDATE SET val = EXCLUDED.val, amount = EXCLUDED.amount, flag = EXCLUDED.flag, ts = EXCLUDED.ts`;
    const mid = from + Math.floor(n / 2);
    await this.db.query(upsert, [from, mid]);
    // Counted once committed (a deadlock may roll it back; the next large transaction tries again).
    let addsColumn = false;
    if (this.has('ddl') && this.n === 0 && this.shared.columns < X_COLUMNS.length) {
      const x = X_COLUMNS[this.shared.columns] as string;
      await this.db.query(`ALTER TABLE items ADD COLUMN ${x} text`);
      addsColumn = true;
      this.log(`workload: writer 0: ALTER TABLE items ADD COLUMN ${x} inside a large transaction`);
      await this.db.query(`UPDATE items SET ${x} = 'x' || id WHERE id BETWEEN $1 AND $2`, [from, from + 200]);
    }
    await this.db.query(upsert, [mid + 1, from + n]);
    if (this.has('toast')) await this.db.query('UPDATE toast SET small = coalesce(small, 0) + 1 WHERE id % 3 = $1', [this.rnd.int(0, 2)]);
    if (this.has('comp')) await this.db.query('UPDATE comp SET v = coalesce(v, 0) + 1 WHERE a % 5 = $1', [this.rnd.int(0, 4)]);
    await this.db.query('DELETE FROM items WHERE id BETWEEN $1 AND $2', [from + n - 50, from + n]);
    return addsColumn;
  }

  private ts(): string {
    const micros = this.rnd.int(0, 2 ** 30) * 1000 + this.rnd.int(0, 999);
    return new Date(Date.UTC(2024, 0, 1) + Math.floor(micros / 1000)).toISOString().replace('Z', `${String(micros % 1000).padStart(3, '0')}+00`);
  }

  private big(): string {
    return `${this.rnd.int(0, 999999)}:${this.rnd.text(this.rnd.int(2100, 6000))}`;
  }

  private async step(): Promise<void> {
    const table = this.rnd.pick(this.tables);
    const r = this.rnd;
    const kc = this.has('keychange');
    const dr = this.has('delreinsert');
    switch (table) {
      case 'items': {
        const id = this.key(ITEM_IDS, HOT_ITEMS);
        // The same draws whether or not the DDL writer added a column yet (streams replay).
        const op = r.weighted({ upsert: 40, update: 30, x: this.has('ddl') && this.has('large') ? 5 : 0, key: kc ? 8 : 0, delete: 12, reinsert: dr ? 5 : 0 });
        const values = [id, r.int(0, 12), r.text(r.int(0, 120)), (r.int(-99999999, 99999999) / 1000).toFixed(3), r.chance(0.5), r.chance(0.1) ? null : this.ts()];
        if (op === 'upsert') {
          await this.db.query(
            `INSERT INTO items (id, grp, val, amount, flag, ts) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET grp = EXCLUDED.grp, val = EXCLUDED.val, amount = EXCLUDED.amount, flag = EXCLUDED.flag, ts = EXCLUDED.ts`,
            values,
          );
        } else if (op === 'update') {
          await this.db.query("UPDATE items SET amount = amount + 1.5, val = left(coalesce(val, '') || '+', 200), flag = NOT flag WHERE id = $1", [id]);
        } else if (op === 'x') {
          const i = r.int(0, X_COLUMNS.length - 1);
          const value = r.chance(0.2) ? null : r.text(20);
          // Only columns whose ALTER committed (another writer's may still be in progress).
          const x = X_COLUMNS[Math.min(i, this.shared.columns - 1)];
          if (x !== undefined) await this.db.query(`UPDATE items SET ${x} = $2 WHERE id = $1`, [id, value]);
        } else if (op === 'key') {
          await this.keyChange('items', ['id'], [id], this.key(ITEM_IDS, HOT_ITEMS));
        } else if (op === 'delete') {
          await this.db.query('DELETE FROM items WHERE id = $1', [id]);
        } else {
          await this.db.query('DELETE FROM items WHERE id = $1', [id]);
          await this.db.query('INSERT INTO items (id, grp, val, amount, flag, ts) VALUES ($1, $2, $3, $4, $5, $6)', values);
          this.stats.deleteReinserts++;
        }
        return;
      }
      case 'comp': {
        const a = this.key(COMP_A, HOT_COMP_A);
        const b = `b${String(r.int(0, COMP_B - 1)).padStart(2, '0')}`;
        const op = r.weighted({ upsert: 40, update: 30, key: kc ? 10 : 0, delete: 12, reinsert: dr ? 5 : 0 });
        const row = [a, b, r.int(-1000, 1000), r.chance(0.2) ? null : r.text(r.int(0, 60)), r.chance(0.1) ? null : this.ts(), r.chance(0.1) ? null : r.chance(0.5)];
        if (op === 'upsert') {
          await this.db.query(
            `INSERT INTO comp (a, b, v, note, ts, flag) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (b, a) DO UPDATE SET v = EXCLUDED.v, note = EXCLUDED.note, ts = EXCLUDED.ts, flag = EXCLUDED.flag`,
            row,
          );
        } else if (op === 'update') {
          await this.db.query('UPDATE comp SET v = coalesce(v, 0) + 1, flag = NOT flag WHERE a = $1 AND b = $2', [a, b]);
        } else if (op === 'key') {
          // Change one column of the composite key (either one).
          if (r.chance(0.5)) await this.keyChange('comp', ['a', 'b'], [a, b], r.int(1, COMP_A), 0);
          else await this.keyChange('comp', ['a', 'b'], [a, b], `b${String(r.int(0, COMP_B - 1)).padStart(2, '0')}`, 1);
        } else if (op === 'delete') {
          await this.db.query('DELETE FROM comp WHERE a = $1 AND b = $2', [a, b]);
        } else {
          await this.db.query('DELETE FROM comp WHERE a = $1 AND b = $2', [a, b]);
          await this.db.query('INSERT INTO comp (a, b, v, note, ts, flag) VALUES ($1, $2, $3, $4, $5, $6)', row);
          this.stats.deleteReinserts++;
        }
        return;
      }
      case 'toast': {
        const id = this.key(TOAST_IDS, HOT_TOAST);
        const op = r.weighted({ insert: 25, small: 40, big: 8, key: this.has('toastkey') ? 12 : 0, delete: 8, reinsert: dr ? 4 : 0 });
        if (op === 'insert') {
          await this.db.query('INSERT INTO toast (id, small, big) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET small = EXCLUDED.small', [id, r.int(0, 100), this.big()]);
        } else if (op === 'small') {
          // Leaves the TOASTed value unchanged: pgoutput does not send it.
          await this.db.query('UPDATE toast SET small = coalesce(small, 0) + 1 WHERE id = $1', [id]);
        } else if (op === 'big') {
          await this.db.query('UPDATE toast SET big = $2 WHERE id = $1', [id, this.big()]);
        } else if (op === 'key') {
          // A key change with the TOASTed value unchanged.
          await this.keyChange('toast', ['id'], [id], this.key(TOAST_IDS, HOT_TOAST));
        } else if (op === 'delete') {
          await this.db.query('DELETE FROM toast WHERE id = $1', [id]);
        } else {
          await this.db.query('DELETE FROM toast WHERE id = $1', [id]);
          await this.db.query('INSERT INTO toast (id, small, big) VALUES ($1, $2, $3)', [id, r.int(0, 100), this.big()]);
          this.stats.deleteReinserts++;
        }
        return;
      }
      case 'keyless': {
        const g = this.key(KEYLESS_G, HOT_G);
        const op = r.weighted({ insert: 40, dup: 10, update1: 20, updateAll: 8, delete1: 15 });
        const row = [g, r.chance(0.1) ? null : `v${r.int(0, 5)}`, r.chance(0.1) ? null : (r.int(0, 9999) / 4).toFixed(3)];
        if (op === 'insert') await this.db.query('INSERT INTO keyless (g, v, n) VALUES ($1, $2, $3)', row);
        else if (op === 'dup') await this.db.query('INSERT INTO keyless (g, v, n) VALUES ($1, $2, $3), ($1, $2, $3)', row);
        else if (op === 'update1') await this.db.query('UPDATE keyless SET n = coalesce(n, 0) + 1 WHERE ctid = (SELECT ctid FROM keyless WHERE g = $1 LIMIT 1)', [g]);
        else if (op === 'updateAll') await this.db.query("UPDATE keyless SET v = coalesce(v, '') || '+' WHERE g = $1", [g]);
        else await this.db.query('DELETE FROM keyless WHERE ctid = (SELECT ctid FROM keyless WHERE g = $1 LIMIT 1)', [g]);
        return;
      }
    }
  }

  /** UPDATE ... SET <key column> = new, only when the new key is free (so it fails only when another writer takes it at the same time). */
  private async keyChange(table: string, keyCols: string[], key: unknown[], to: unknown, which = 0): Promise<void> {
    const col = keyCols[which] as string;
    const where = keyCols.map((k, i) => `${k} = $${i + 1}`).join(' AND ');
    const newKey = keyCols.map((k, i) => (i === which ? `${k} = $${keyCols.length + 1}` : `${k} = $${i + 1}`)).join(' AND ');
    const r = await this.db.query(`UPDATE ${table} SET ${col} = $${keyCols.length + 1} WHERE ${where} AND NOT EXISTS (SELECT 1 FROM ${table} WHERE ${newKey})`, [...key, to]);
    if ((r.rowCount ?? 0) > 0) this.stats.keyChanges++;
  }
}
