import pg from 'pg';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { freshDatabase, machinePg15 } from '../helpers/postgres.js';
import { REJECT_VALUE, describeKeylessSinkContract, type KeylessRow } from './sink-contract.js';

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
