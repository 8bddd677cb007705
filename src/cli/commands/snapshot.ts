import type { Command } from 'commander';
import pg from 'pg';
import { loadConfigFile } from '../../config/load.js';
import { parseTableName, quoteIdent, quoteQualified } from '../../core/sql.js';
import { SnapshotStore, type SnapshotJob } from '../../source/snapshot-store.js';
import { parseDuration } from '../duration.js';
import { EXIT } from '../exit-codes.js';
import { sourceConnection } from '../../compose/source-connection.js';
import { configOption } from './options.js';
import { slotOf } from '../../config/slot.js';

interface SnapshotOptions {
  config: string;
  from?: string;
  to?: string;
  wait: boolean;
  timeout?: string;
  list?: boolean;
  json?: boolean;
}

/**
 * `syncline snapshot TABLE...`: asks the running capture to re-read tables (or a key range)
 * in chunks while streaming continues. Tables not yet in the publication are added first,
 * which is how a table added later gets its existing rows.
 */
export function registerSnapshot(program: Command): void {
  program
    .command('snapshot [tables...]')
    .description('re-read tables (or a key range) through the running capture, without pausing streaming')
    .addOption(configOption())
    .option('--from <value>', 'first value of the first primary-key column (inclusive)')
    .option('--to <value>', 'last value of the first primary-key column (inclusive)')
    .option('--no-wait', 'return once requested instead of waiting for completion')
    .option('--timeout <time>', 'give up waiting after this long (e.g. 10m)')
    .option('--list', 'list snapshot jobs and their progress')
    .option('--json', 'print JSON')
    .action(async (tables: string[], opts: SnapshotOptions) => {
      const config = loadConfigFile(opts.config);
      const slot = slotOf(config);
      const client = new pg.Client(sourceConnection(config));
      await client.connect();
      try {
        const store = new SnapshotStore(client, config.source.state_schema, slot.name);
        await store.prepare();
        if (opts.list || tables.length === 0) {
          const jobs = await store.all();
          if (opts.json) process.stdout.write(`${JSON.stringify(jobs.map(describe), null, 2)}\n`);
          else if (jobs.length === 0) process.stdout.write('no snapshot jobs\n');
          else for (const j of jobs) process.stdout.write(`#${j.id} ${j.table.schema}.${j.table.table} ${j.status} rows=${j.rows} chunks=${j.chunks}${j.error ? ` error=${j.error}` : ''}\n`);
          return;
        }
        const ids: string[] = [];
        for (const name of tables) {
          const t = parseTableName(name);
          const inPublication = await client.query(
            `SELECT 1 FROM pg_publication p WHERE p.pubname = $1 AND (p.puballtables OR EXISTS (SELECT 1 FROM pg_publication_tables pt WHERE pt.pubname = p.pubname AND pt.schemaname = $2 AND pt.tablename = $3))`,
            [slot.publication, t.schema, t.table],
          );
          if (inPublication.rowCount === 0) {
            await client.query(`ALTER PUBLICATION ${quoteIdent(slot.publication)} ADD TABLE ${quoteQualified(t.schema, t.table)}`);
            if (!opts.json) process.stdout.write(`added ${t.schema}.${t.table} to publication ${slot.publication}\n`);
          }
          ids.push(await store.request(t, opts.from ?? null, opts.to ?? null));
        }
        if (!opts.wait) {
          process.stdout.write(opts.json ? `${JSON.stringify({ requested: ids })}\n` : `requested snapshot job(s) ${ids.join(', ')}\n`);
          return;
        }
        if (!opts.json) process.stdout.write('waiting for the running capture (syncline run/capture) to take the job(s)...\n');
        const deadline = opts.timeout ? Date.now() + parseDuration(opts.timeout) : Number.POSITIVE_INFINITY;
        const started = Date.now();
        for (;;) {
          const jobs = (await Promise.all(ids.map((id) => store.get(id)))).filter((j): j is SnapshotJob => j !== undefined);
          const rows = jobs.reduce((s, j) => s + j.rows, 0);
          const finished = jobs.every((j) => j.status === 'done' || j.status === 'failed');
          if (!opts.json) {
            const rate = Math.round(rows / Math.max((Date.now() - started) / 1000, 0.001));
            const line = `${jobs.map((j) => `${j.table.table}: ${j.status} ${j.rows} rows`).join(' | ')}  (${rate} rows/s)`;
            process.stdout.write(process.stdout.isTTY ? `\r${line}\u001b[K` : `${line}\n`);
          }
          if (finished) {
            if (opts.json) process.stdout.write(`${JSON.stringify(jobs.map(describe), null, 2)}\n`);
            else process.stdout.write('\n');
            process.exitCode = jobs.some((j) => j.status === 'failed') ? EXIT.FAILURE : EXIT.OK;
            return;
          }
          if (Date.now() > deadline) {
            process.stderr.write('timed out waiting; the job(s) stay queued for the capture\n');
            process.exitCode = EXIT.FAILURE;
            return;
          }
          await new Promise((r) => setTimeout(r, 500));
        }
      } finally {
        await client.end();
      }
    });
}

function describe(j: SnapshotJob): Record<string, unknown> {
  return { id: j.id, table: `${j.table.schema}.${j.table.table}`, status: j.status, rows: j.rows, chunks: j.chunks, last_key: j.lastKey, error: j.error };
}
