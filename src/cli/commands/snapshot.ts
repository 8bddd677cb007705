import { InvalidArgumentError, type Command } from 'commander';
import type { SnapshotJob } from '../../source/snapshot-store.js';
import { parseDuration } from '../../core/duration.js';
import { EXIT } from '../exit-codes.js';
import { configOption, durationArg, TABLE_ARG_HELP } from './options.js';

interface SnapshotOptions {
  config: string;
  from?: string;
  to?: string;
  wait: boolean;
  timeout?: string;
  list?: boolean;
  cancel?: string[];
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
    .description(`re-read tables (or a key range) through the running capture, without pausing streaming; each table ${TABLE_ARG_HELP}`)
    .addOption(configOption())
    .option('--from <value>', 'first value of the first primary-key column (inclusive)')
    .option('--to <value>', 'last value of the first primary-key column (inclusive)')
    .option('--no-wait', 'return once requested instead of waiting for completion')
    .option('--timeout <time>', 'give up waiting after this long (e.g. 10m)', durationArg)
    .option('--list', 'list snapshot jobs and their progress')
    .option('--cancel <ids>', 'cancel pending or running jobs (ids as --list shows them, comma-separated); a running one stops after its current chunk', jobIds)
    .option('--json', 'print JSON')
    .action(async (tables: string[], opts: SnapshotOptions) => {
      const { loadConfigFile } = await import('../../config/load.js');
      const { SnapshotRequests } = await import('../../ops/snapshots.js');
      const snapshots = await SnapshotRequests.open(loadConfigFile(opts.config));
      try {
        if (opts.cancel) {
          const cancelled = await snapshots.cancel(opts.cancel);
          const jobs = await snapshots.jobs(opts.cancel);
          const notCancelled = opts.cancel.filter((id) => !cancelled.includes(id));
          const why = (id: string): string => {
            const job = jobs.find((j) => j.id === id);
            if (job?.status === 'running' && job.cutAt) return `#${id} is reading keyless table ${job.table.schema}.${job.table.table} past its cut (the target's copy was reset there; stopping would leave only part of the table): it reads to its end`;
            return job ? `#${id} is ${job.status} (only pending or running jobs can be)` : `#${id} does not exist for this slot`;
          };
          if (opts.json) process.stdout.write(`${JSON.stringify({ cancelled, not_cancelled: notCancelled.map((id) => ({ id, reason: why(id) })) })}\n`);
          else {
            if (cancelled.length > 0) process.stdout.write(`cancelled snapshot job(s) ${cancelled.map((id) => `#${id}`).join(', ')}\n`);
            for (const id of notCancelled) process.stderr.write(`not cancelled: ${why(id)}\n`);
          }
          process.exitCode = notCancelled.length === 0 ? EXIT.OK : EXIT.FAILURE;
          return;
        }
        if (opts.list || tables.length === 0) {
          const jobs = await snapshots.all();
          if (opts.json) process.stdout.write(`${JSON.stringify(jobs.map(describe), null, 2)}\n`);
          else if (jobs.length === 0) process.stdout.write('no snapshot jobs\n');
          else for (const j of jobs) process.stdout.write(`#${j.id} ${j.table.schema}.${j.table.table} ${j.status} rows=${j.rows} chunks=${j.chunks}${j.error ? ` error=${j.error}` : ''}\n`);
          return;
        }
        const ids: string[] = [];
        for (const name of tables) {
          const { id, table, addedToPublication } = await snapshots.request(name, opts.from ?? null, opts.to ?? null);
          if (addedToPublication && !opts.json) process.stdout.write(`added ${table} to publication ${addedToPublication}\n`);
          ids.push(id);
        }
        if (!opts.wait) {
          process.stdout.write(opts.json ? `${JSON.stringify({ requested: ids })}\n` : `requested snapshot job(s) ${ids.join(', ')}\n`);
          return;
        }
        if (!opts.json) process.stdout.write('waiting for the running capture (syncline run/capture) to take the job(s)...\n');
        const deadline = opts.timeout ? Date.now() + parseDuration(opts.timeout) : Number.POSITIVE_INFINITY;
        const started = Date.now();
        for (;;) {
          const jobs = await snapshots.jobs(ids);
          const rows = jobs.reduce((s, j) => s + j.rows, 0);
          const finished = jobs.every((j) => j.status === 'done' || j.status === 'failed' || j.status === 'cancelled');
          if (!opts.json) {
            const rate = Math.round(rows / Math.max((Date.now() - started) / 1000, 0.001));
            const line = `${jobs.map((j) => `${j.table.table}: ${j.status} ${j.rows} rows`).join(' | ')}  (${rate} rows/s)`;
            process.stdout.write(process.stdout.isTTY ? `\r${line}\u001b[K` : `${line}\n`);
          }
          if (finished) {
            if (opts.json) process.stdout.write(`${JSON.stringify(jobs.map(describe), null, 2)}\n`);
            else process.stdout.write('\n');
            for (const j of jobs) if (j.status === 'cancelled' && !opts.json) process.stderr.write(`snapshot job #${j.id} (${j.table.schema}.${j.table.table}) was cancelled\n`);
            process.exitCode = jobs.some((j) => j.status !== 'done') ? EXIT.FAILURE : EXIT.OK;
            return;
          }
          if (Date.now() > deadline) {
            // --json: the jobs as they are (unfinished), so a script learns their ids to wait or cancel.
            if (opts.json) process.stdout.write(`${JSON.stringify(jobs.map(describe), null, 2)}\n`);
            process.stderr.write('timed out waiting; the job(s) stay queued for the capture\n');
            process.exitCode = EXIT.FAILURE;
            return;
          }
          await new Promise((r) => setTimeout(r, 500));
        }
      } finally {
        await snapshots.close();
      }
    });
}

/** `--cancel 3,4`: job ids. */
function jobIds(value: string): string[] {
  const ids = value.split(',').map((v) => v.trim().replace(/^#/, ''));
  const bad = ids.filter((id) => !/^[0-9]{1,18}$/.test(id));
  if (bad.length > 0) throw new InvalidArgumentError(`not a snapshot job id: ${bad.join(', ')} (ids are numbers, as \`syncline snapshot --list\` shows them)`);
  return ids;
}

function describe(j: SnapshotJob): Record<string, unknown> {
  return { id: j.id, table: `${j.table.schema}.${j.table.table}`, status: j.status, rows: j.rows, chunks: j.chunks, last_key: j.lastKey, error: j.error };
}
