import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { changeAt, tracking } from '../helpers/conflict-fixtures.js';
import { freePort, secondPg15, uniqueName, waitFor, type PgServer } from '../helpers/postgres.js';
import { AUDIT, writePairConfigs, range, rowsOf } from '../helpers/many-writers.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';

type SideName = 'a' | 'b';

const ROWS = 'SELECT id, name, hits::text, gen, updated_at::text FROM accounts ORDER BY id';
/** Shared keys (1..20: each deleted once, by a (1..10) or b (11..20), and inserted anew), then a's own rows, then b's. */
const SHARED = range(1, 20);
const OWN: Record<SideName, number[]> = { a: range(21, 30), b: range(31, 40) };
const ROUNDS = 32;

/** A microsecond timestamp as an integer (exact comparisons). */
const MICROS = (expr: string): string => `(extract(epoch FROM ${expr}) * 1000000)::bigint::text`;

/** What one side's application did, for the expected end state. */
interface Log {
  /** Every row increment: key, the incarnation it was made to (gen), its clock (updated_at, µs). */
  increments: { id: number; gen: number; at: bigint }[];
  /** Deletes: key and deleting transaction (its commit time is read once it committed). */
  deletes: { id: number; at: bigint }[];
  /** Keys inserted anew. */
  inserted: number[];
}

/**
 * Active-active with deletes: two PostgreSQL 15 clusters (track_commit_timestamp on), each
 * direction a `syncline run` process killed with SIGKILL while both applications update the
 * same rows (a delta counter, last_write_wins on the application's clock), delete shared
 * keys and insert them anew. Afterwards both databases are identical row by row, every
 * increment counts exactly as the rules say (README "Many writers": an increment older than
 * the key's delete died with the deleted row; one made after it to a copy of the deleted row
 * brings that row back with every increment made to it), no source change was written twice
 * at either side (an audit trigger), and nothing flows once the writes stop.
 */
describe('active-active with deletes and kill -9 (two PostgreSQL 15 clusters, syncline run processes)', () => {
  let servers: PgServer[] = [];
  let dir: string;
  const urls: Record<SideName, string> = { a: '', b: '' };
  const names = { a: uniqueName('aad_a'), b: uniqueName('aad_b') };
  const ports: Record<SideName, number> = { a: 0, b: 0 };
  const children = new Map<SideName, ChildProcess>();
  const logs = new Map<SideName, string>();
  let runs = 0;

  beforeAll(async () => {
    ensureBuilt();
    servers = await Promise.all([secondPg15(['track_commit_timestamp=on']), secondPg15(['track_commit_timestamp=on'])]);
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-aad-'));
    for (const [side, server] of [['a', servers[0]], ['b', servers[1]]] as const) {
      const admin = new pg.Client({ connectionString: (server as PgServer).url('postgres') });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(names[side])}`);
      await admin.end();
      urls[side] = (server as PgServer).url(names[side]);
      const c = new pg.Client({ connectionString: urls[side] });
      await c.connect();
      await c.query(`CREATE TABLE accounts (id integer PRIMARY KEY, name text NOT NULL, hits bigint NOT NULL, gen integer NOT NULL, updated_at timestamptz NOT NULL);
                     ALTER TABLE accounts REPLICA IDENTITY FULL;
                     INSERT INTO accounts SELECT g, 'seed', 0, 0, '2020-01-01 00:00:00+00' FROM generate_series(1, 40) g;
                     ${AUDIT}`);
      await c.end();
      ports[side] = await freePort();
    }
    await writePairConfigs(dir, names, urls, ports);
  }, 120_000);

  afterAll(async () => {
    for (const child of children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (process.env.SYNCLINE_TEST_KEEP) return; // to look at both databases and the logs after a failure
    for (const s of servers) await s.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  function start(side: SideName): void {
    const file = path.join(dir, `run-${side}-${runs++}.log`);
    logs.set(side, file);
    const log = createWriteStream(file);
    const child = spawn(process.execPath, [CLI, 'run', '-c', path.join(dir, `${side}.yaml`)], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.set(side, child);
  }

  async function kill(side: SideName): Promise<void> {
    const child = children.get(side);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }

  /** `sync_events_captured_total` + `sync_events_applied_total` of a running pipeline, or undefined. */
  async function traffic(side: SideName): Promise<number | undefined> {
    try {
      const text = await (await fetch(`http://127.0.0.1:${ports[side]}/metrics`)).text();
      let n = 0;
      for (const m of text.matchAll(/^sync_events_(?:captured|applied)_total\{[^}]*\} (\d+)/gm)) n += Number(m[1]);
      return n;
    } catch {
      return undefined;
    }
  }

  const streaming = async (side: SideName): Promise<boolean> => (await readFile(logs.get(side) as string, 'utf8').catch(() => '')).includes('pgoutput protocol negotiated');

  it('with track_commit_timestamp, a delete made at the target is as late as its transaction’s commit', async () => {
    // A delete whose transaction commits a while after the statement; an incoming update whose
    // clock lies between the two is older than the delete (as the other side, which sees the
    // delete's commit time, decides too).
    const url = (servers[0] as PgServer).url(names.a);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query(`CREATE TABLE acc (id text PRIMARY KEY, v text, n bigint); INSERT INTO acc VALUES ('k', 'seed', 1)`);
    const sink = new PostgresSink({ url, stateSchema: 'scratch', deleteMode: 'hard', versionGate: true, conflicts: { ...tracking(), localSource: 'here' }, trackedTables: [{ schema: 'public', table: 'acc' }] });
    try {
      await sink.prepare();
      await c.query('BEGIN');
      await c.query(`DELETE FROM acc WHERE id = 'k'`);
      await new Promise((r) => setTimeout(r, 400));
      const between = new Date(Date.now() - 200).toISOString();
      await c.query('COMMIT');
      const o = await sink.apply([changeAt('there', 0x100, between, 'UPDATE', 'acc', { id: 'k' }, { id: 'k', v: 'there', n: '2' }, { id: 'k', v: 'seed', n: '1' })], new Map(), 'g');
      expect(o).toMatchObject({ applied: 0, stale: 1 });
      expect((await c.query(`SELECT * FROM acc`)).rows).toEqual([]);
    } finally {
      await sink.close();
      await c.query(`DROP TABLE acc; DROP SCHEMA scratch CASCADE`);
      await c.end();
    }
  });

  it('converges with deletes and inserts anew of shared keys: identical rows, every increment counted as the rules say, none written twice, no loop', async () => {
    start('a');
    start('b');
    await waitFor('both captures streaming', async () => (await streaming('a')) && (await streaming('b')), 60_000, 200);
    // The sinks record the applications' deletes from their start (prepare), before any change arrived.
    for (const side of ['a', 'b'] as const) {
      await waitFor(`triggers at ${side}`, async () => (await rowsOf(urls[side], `SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'accounts'::regclass AND tgname LIKE 'syncline_local_%'`)) === '[{"n":4}]', 30_000, 100);
    }

    const workload = async (side: SideName, afterRound: (round: number) => Promise<void>): Promise<Log> => {
      const log: Log = { increments: [], deletes: [], inserted: [] };
      const c = new pg.Client({ connectionString: urls[side] });
      await c.connect();
      // The sink locks the rows it applies: a deadlock aborts one of the two, and the application retries.
      const retrying = async <R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<pg.QueryResult<R>> => {
        for (;;) {
          try {
            return await c.query<R>(sql, params);
          } catch (err) {
            if ((err as { code?: string }).code !== '40P01') throw err;
          }
        }
      };
      const mine = side === 'a' ? range(1, 10) : range(11, 20);
      const theirs = side === 'a' ? range(11, 20) : range(1, 10);
      try {
        for (let r = 0; r < ROUNDS; r++) {
          const ids = [...OWN[side].filter((id) => (id + r) % 2 === 0), ...SHARED.filter((id) => (id + r) % 3 !== 0)];
          const up = await retrying<{ id: number; gen: number; at: string }>(
            `UPDATE accounts SET name = $1, hits = hits + 1, updated_at = clock_timestamp() WHERE id = ANY($2::int[]) RETURNING id, gen, ${MICROS('updated_at')} AS at`,
            [`${side}-${r}`, ids],
          );
          for (const row of up.rows) log.increments.push({ id: row.id, gen: row.gen, at: BigInt(row.at) });
          // Rounds 2..21: one of this side's keys deleted every other round.
          if (r >= 2 && r < 22 && r % 2 === 0) {
            const id = mine[(r - 2) / 2] as number;
            const del = await retrying<{ xid: string }>(`DELETE FROM accounts WHERE id = $1 RETURNING pg_current_xact_id()::text AS xid`, [id]);
            const xid = del.rows[0]?.xid;
            if (xid) {
              const { rows } = await c.query<{ at: string }>(`SELECT ${MICROS('pg_xact_commit_timestamp(($1::bigint % 4294967296)::text::xid)')} AS at`, [xid]);
              log.deletes.push({ id, at: BigInt(rows[0]?.at as string) });
            }
          }
          // Keys deleted four rounds or more ago come back: the odd ones inserted anew by their
          // deleting side, the even ones by the other side, each where it is absent.
          const again = [...mine.filter((id, i) => id % 2 === 1 && 2 + 2 * i <= r - 4), ...theirs.filter((id, i) => id % 2 === 0 && 2 + 2 * i <= r - 4)];
          const ins = await retrying<{ id: number }>(
            `INSERT INTO accounts SELECT g, $1, 0, 1, clock_timestamp() FROM unnest($2::int[]) g ON CONFLICT (id) DO NOTHING RETURNING id`,
            [`${side}-new-${r}`, again],
          );
          log.inserted.push(...ins.rows.map((x) => x.id));
          await afterRound(r);
        }
      } finally {
        await c.end();
      }
      return log;
    };

    const pause = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 60));
    const [logA, logB] = await Promise.all([
      workload('a', async (r) => {
        if (r === 9 || r === 24) {
          await kill('a');
          start('a');
        }
        await pause();
      }),
      workload('b', async (r) => {
        if (r === 16) {
          await kill('b');
          start('b');
        }
        await pause();
      }),
    ]);

    let last = '';
    await waitFor(
      'both databases identical',
      async () => {
        const [ra, rb] = [await rowsOf(urls.a, ROWS), await rowsOf(urls.b, ROWS)];
        const at = (rows: string): Map<number, unknown> => new Map((JSON.parse(rows) as { id: number }[]).map((x) => [x.id, x]));
        const [ma, mb] = [at(ra), at(rb)];
        const differing = [...new Set([...ma.keys(), ...mb.keys()])].filter((id) => JSON.stringify(ma.get(id)) !== JSON.stringify(mb.get(id))).map((id) => ({ id, a: ma.get(id), b: mb.get(id) }));
        last = `rows differing: ${JSON.stringify(differing).slice(0, 600)}`;
        return ra === rb;
      },
      60_000,
      250,
      () => last,
    );
    const rows = JSON.parse(await rowsOf(urls.a, ROWS)) as { id: number; name: string; hits: string; gen: number }[];

    // The expected end state, key by key.
    const increments = [...logA.increments, ...logB.increments];
    const deletes = new Map([...logA.deletes, ...logB.deletes].map((d) => [d.id, d.at]));
    const inserted = new Set([...logA.inserted, ...logB.inserted]);
    expect([...deletes.keys()].sort((x, y) => x - y)).toEqual(SHARED);
    const expected: { id: number; hits: string }[] = [];
    const revived = new Set<number>();
    for (const id of range(1, 40)) {
      const mine = increments.filter((i) => i.id === id);
      const deletedAt = deletes.get(id);
      if (deletedAt === undefined) {
        expected.push({ id, hits: String(mine.length) });
        continue;
      }
      // Made to the deleted row after it was deleted: that row comes back, with all it counted.
      const revives = mine.some((i) => i.gen === 0 && i.at > deletedAt);
      if (revives) revived.add(id);
      if (revives) expected.push({ id, hits: String(mine.length) });
      else if (inserted.has(id)) expected.push({ id, hits: String(mine.filter((i) => i.gen === 1).length) });
    }
    expect(rows.map((r) => ({ id: r.id, hits: r.hits }))).toEqual(expected);
    // The workload did what it is for: keys came back both ways, increments died with deleted rows.
    expect(inserted.size).toBeGreaterThan(5);
    const died = increments.filter((i) => !revived.has(i.id) && i.at < (deletes.get(i.id) ?? 0n));
    expect(died.length).toBeGreaterThan(0);
    console.log(`active-active-deletes: ${increments.length} increments (${died.length} died with their row), ${deletes.size} deletes, ${inserted.size} keys inserted anew, ${revived.size} rows brought back by a later update of the other side`);
    expect(rows.filter((r) => r.id >= 21 && r.id <= 30).every((r) => r.name.startsWith('a-'))).toBe(true);
    expect(rows.filter((r) => r.id >= 31).every((r) => r.name.startsWith('b-'))).toBe(true);

    for (const s of ['a', 'b'] as const) {
      // No source change was written twice at either side (the audit trigger's record).
      expect(await rowsOf(urls[s], 'SELECT src, lsn::text, seq, count(*)::int AS n FROM applied_audit GROUP BY 1, 2, 3 HAVING count(*) > 1')).toBe('[]');
      expect(await rowsOf(urls[s], 'SELECT count(*)::int AS n FROM syncline.dead_letter')).toBe('[{"n":0}]');
      // Each side recorded its application's deletes, and decided the other side's late writes against them.
      const local = JSON.parse(await rowsOf(urls[s], `SELECT count(*)::int AS n FROM syncline.source_tombstones WHERE source = '${names[s]}' AND xid IS NOT NULL`)) as { n: number }[];
      expect(local[0]?.n).toBe(10);
    }

    // No loop: once both are caught up, neither captures nor applies anything more.
    await waitFor('metrics of both pipelines', async () => (await traffic('a')) !== undefined && (await traffic('b')) !== undefined, 30_000, 200);
    let before: [number | undefined, number | undefined] = [undefined, undefined];
    await waitFor(
      'traffic stops',
      async () => {
        const now: [number | undefined, number | undefined] = [await traffic('a'), await traffic('b')];
        const still = now[0] === before[0] && now[1] === before[1];
        before = now;
        return still;
      },
      30_000,
      2000,
    );
  }, 180_000);
});
