import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { rowKeyOf, type ChangeEvent, type Row } from '../../src/core/change.js';
import { PostgresGateStore } from '../../src/sink/postgres-gate-store.js';
import { versionGatedSink } from '../../src/sink/version-gated-sink.js';
import { MemorySink } from '../../src/testing/memory-sink.js';
import { MemoryStream } from '../../src/testing/memory-stream.js';
import { SynclineError } from '../../src/core/errors.js';
import { ChangeFactory, describeSinkContract, describeStreamContract, REJECT_VALUE } from '../../src/testing/vitest.js';
import { freshDatabase, machinePg15 } from '../helpers/postgres.js';

/** The in-memory fakes users get from `syncline/testing` pass the same suites as the real adapters. */
describeSinkContract('MemorySink (syncline/testing)', async () => {
  const sink = new MemorySink({ reject: (c) => (c.payload?.v === REJECT_VALUE ? 'v must not be __reject__' : undefined) });
  return {
    sink,
    storesPositions: true,
    createTable: async () => undefined,
    readRow: async (table, key) => sink.row(table, key),
    close: () => sink.close(),
  };
});

describeStreamContract('MemoryStream (syncline/testing)', async ({ partitions }) => new MemoryStream(partitions));

/**
 * The helper for targets without transactions, with its PostgreSQL store, in front of a
 * key-value target that writes a batch all-or-nothing (as the contract's atomicity case needs).
 */
describeSinkContract('versionGatedSink + PostgresGateStore (PostgreSQL 15)', async () => {
  const server = await machinePg15();
  const url = await freshDatabase(server, 'syncline_lib11_gate');
  const rows = new Map<string, { row: Row; version: bigint }>();
  const id = (c: Pick<ChangeEvent, 'schema' | 'table' | 'key'>): string => `${c.schema}.${c.table}\u0000${rowKeyOf(c)}`;
  const sink = versionGatedSink({
    store: new PostgresGateStore({ url, schema: `gate_${randomBytes(2).toString('hex')}` }),
    target: {
      async write(changes) {
        if (changes.some((c) => c.payload?.v === REJECT_VALUE)) throw new SynclineError('REJECTED', 'v must not be __reject__', { retriable: false });
        for (const c of changes) {
          const v = BigInt(c._version);
          if (c.op === 'TRUNCATE') {
            for (const [k, r] of rows) if (k.startsWith(`${c.schema}.${c.table}\u0000`) && r.version < v) rows.delete(k);
          } else if (c.op === 'DELETE') rows.delete(id(c));
          else rows.set(id(c), { row: { ...(c.unchanged ? rows.get(id(c))?.row : {}), ...c.payload }, version: v });
        }
      },
    },
  });
  return {
    sink,
    storesPositions: true,
    createTable: async () => undefined,
    readRow: async (table, key) => rows.get(id({ schema: 'public', table, key }))?.row,
    close: () => sink.close(),
  };
});

describe('versionGatedSink marks only after the target accepted a batch', () => {
  const f = new ChangeFactory();
  let db: pg.Client | undefined;
  afterAll(async () => db?.end());

  it('a failed write marks nothing: the retry writes the change again; a replay after success writes nothing', async () => {
    const server = await machinePg15();
    const url = await freshDatabase(server, 'syncline_lib11_gate_marks');
    const written: string[] = [];
    let failNext = true;
    const sink = versionGatedSink({
      store: new PostgresGateStore({ url }),
      target: {
        async write(changes) {
          if (failNext) {
            failNext = false;
            throw new SynclineError('DOWN', 'target down', { retriable: true });
          }
          written.push(...changes.map((c) => `${c.op}:${String(c.key.id)}@${c._version}`));
        },
      },
    });
    try {
      await sink.prepare();
      const batch = [f.insert('t', 'a', 1, 'a1'), f.insert('t', 'b', 2, 'b1')];
      await expect(sink.apply(batch, new Map([[0, 2n]]), 'g')).rejects.toMatchObject({ retriable: true });
      expect(await sink.positions('g')).toEqual(new Map());
      expect(await sink.apply(batch, new Map([[0, 2n]]), 'g')).toMatchObject({ applied: 2, stale: 0 });
      expect(await sink.positions('g')).toEqual(new Map([[0, 2n]]));
      expect(await sink.apply(batch, new Map([[0, 2n]]), 'g')).toMatchObject({ applied: 0, stale: 2 });
      expect(written).toHaveLength(2);
      db = new pg.Client({ connectionString: url });
      await db.connect();
      const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM syncline_gate.gate_rows');
      expect(rows[0]?.n).toBe(2);
    } finally {
      await sink.close();
    }
  });
});
