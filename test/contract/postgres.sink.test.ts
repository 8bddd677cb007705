import pg from 'pg';
import { PostgresSink } from '../../src/sink/postgres/postgres-sink.js';
import { freshDatabase, machinePg15 } from '../helpers/postgres.js';
import { REJECT_VALUE, describeSinkContract } from './sink-contract.js';

describeSinkContract('postgres (PostgreSQL 15)', async () => {
  const server = await machinePg15();
  const url = await freshDatabase(server, 'syncline_sinkc_pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const sink = new PostgresSink({ url, stateSchema: 'syncline', deleteMode: 'hard', versionGate: true });
  return {
    sink,
    storesPositions: true,
    missingTableIsPrerequisite: true,
    async createTable(table) {
      await client.query(
        `CREATE TABLE public.${pg.escapeIdentifier(table)} (id text PRIMARY KEY, v text CHECK (v IS DISTINCT FROM ${pg.escapeLiteral(REJECT_VALUE)}), n text)`,
      );
    },
    async readRow(table, key) {
      const { rows } = await client.query<{ id: string; v: string | null; n: string | null }>(
        `SELECT id, v, n FROM public.${pg.escapeIdentifier(table)} WHERE id = $1`,
        [key.id],
      );
      return rows[0];
    },
    async close() {
      await sink.close();
      await client.end();
    },
  };
});
