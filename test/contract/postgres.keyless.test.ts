import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { freshDatabase, machinePg15 } from '../helpers/postgres.js';
import { KeylessChangeFactory, REJECT_VALUE, describeKeylessSinkContract, type KeylessRow } from './sink-contract.js';

// Keyless tables at the postgres sink: the reference semantics the mysql and sqlite sinks share.
describeKeylessSinkContract('postgres (PostgreSQL 15)', async () => {
  const server = await machinePg15();
  const url = await freshDatabase(server, 'syncline_ms_keyless_pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
  const check = `CHECK (v IS DISTINCT FROM ${pg.escapeLiteral(REJECT_VALUE)})`;
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      await client.query(`CREATE TABLE public.${pg.escapeIdentifier(table)} (id text PRIMARY KEY, v text ${check}, n text)`);
    },
    async createKeylessTable(table) {
      await client.query(`CREATE TABLE public.${pg.escapeIdentifier(table)} (id text, v text ${check}, n text)`);
    },
    async readRow(table, key) {
      const { rows } = await client.query<KeylessRow>(`SELECT id, v, n FROM public.${pg.escapeIdentifier(table)} WHERE id = $1`, [key.id]);
      return rows[0] && { ...rows[0] };
    },
    async readRows(table) {
      const { rows } = await client.query<KeylessRow>(`SELECT id, v, n FROM public.${pg.escapeIdentifier(table)}`);
      return rows;
    },
    async close() {
      await sink.close();
      await client.end();
    },
  };
});

describe('postgres keyless rows in columns with modifiers', () => {
  it('a delete finds the row the column stored rounded (numeric(12,2), timestamp(0), char(4)); the others stay', async () => {
    const server = await machinePg15();
    const url = await freshDatabase(server, 'syncline_keyless_typmod');
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
    try {
      await sink.prepare();
      await client.query('CREATE TABLE m (id text, v numeric(12,2), n timestamp(0), c char(4))');
      const f = new KeylessChangeFactory();
      const row = (v: string, n: string): Record<string, string> => ({ id: 'a', v, n, c: 'ab' });
      const event = (ver: number, payload: Record<string, string> | null, before?: Record<string, string>): ChangeEvent => {
        const e = f.event(before ? (payload ? 'UPDATE' : 'DELETE') : 'INSERT', 'm', ver, null);
        e.payload = payload;
        if (before) e.before = before;
        return e;
      };
      // The source has unconstrained columns: 1.5 and 1.25 print as such there.
      await sink.apply([event(1, row('1.5', '2024-01-01 10:00:00.4')), event(2, row('1.25', '2024-01-01 10:00:00')), event(3, row('7', '2024-01-02 00:00:00'))], new Map(), 'g');
      await sink.apply([event(4, null, row('1.5', '2024-01-01 10:00:00.4')), event(5, row('8', '2024-01-03 00:00:00'), row('7', '2024-01-02 00:00:00'))], new Map(), 'g');
      const { rows } = await client.query<{ v: string; n: string; c: string }>("SELECT v::text, to_char(n, 'YYYY-MM-DD HH24:MI:SS') AS n, c FROM m ORDER BY v");
      expect(rows).toEqual([
        { v: '1.25', n: '2024-01-01 10:00:00', c: 'ab  ' },
        { v: '8.00', n: '2024-01-03 00:00:00', c: 'ab  ' },
      ]);
    } finally {
      await sink.close();
      await client.end();
    }
  });
});
