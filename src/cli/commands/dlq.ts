import type { Command } from 'commander';
import { PrerequisiteError, SynclineError, UsageError } from '../../core/errors.js';
import { deadLetterSummary, type DeadLetterFilter, type DeadLetterQueue } from '../../dlq/dead-letter-queue.js';
import { parseDuration } from '../../core/duration.js';
import { EXIT } from '../exit-codes.js';
import { configOption, durationArg, positiveIntegerArg, TABLE_ARG_HELP } from './options.js';

interface FilterOptions {
  config: string;
  id?: string[];
  table?: string;
  error?: string;
  olderThan?: string;
  limit?: string;
  json?: boolean;
}

function filterOf(opts: FilterOptions): DeadLetterFilter {
  const f: DeadLetterFilter = {};
  if (opts.id) f.ids = opts.id;
  if (opts.table) f.table = opts.table;
  if (opts.error) f.error = opts.error;
  if (opts.olderThan) f.olderThanMs = parseDuration(opts.olderThan);
  if (opts.limit) f.limit = Number(opts.limit);
  return f;
}

async function withQueue<T>(file: string, fn: (dlq: DeadLetterQueue) => Promise<T>): Promise<T> {
  const { loadConfigFile } = await import('../../config/load.js');
  const { openDeadLetterQueue } = await import('../../compose/dead-letters.js');
  const config = loadConfigFile(file);
  const dlq = openDeadLetterQueue(config);
  if (!dlq) throw new PrerequisiteError('the dead-letter queue is disabled', 'set dead_letter.enabled: true');
  try {
    await dlq.prepare();
    return await fn(dlq);
  } finally {
    await dlq.close();
  }
}


function withFilters(cmd: Command): Command {
  return cmd
    .addOption(configOption())
    .option('--id <id...>', 'only these entry ids')
    .option('--table <name>', `only this table, ${TABLE_ARG_HELP}`)
    .option('--error <text>', 'only entries whose error or code contains this text')
    .option('--older-than <age>', 'only entries first failed longer ago than this (e.g. 1h, 30m)', durationArg)
    .option('--limit <n>', 'at most this many entries (purge: all that match unless given)', positiveIntegerArg, '1000');
}

/** Said when a command stopped at `--limit`: more entries may match, and nothing else would tell. */
function limitNote(count: number, limit: string | undefined, again: string): string {
  return count >= Number(limit) ? `the first ${count} matching entries only (--limit ${limit}): ${again}\n` : '';
}

/** Entries a purge takes per round trip: it lists and removes in rounds, so a queue of every size goes without holding it all. */
const PURGE_CHUNK = 1000;

export function registerDlq(program: Command): void {
  const dlq = program.command('dlq').description('inspect, replay and purge the dead-letter queue');

  withFilters(dlq.command('list').description('list dead-lettered changes, oldest first'))
    .option('--json', 'print JSON')
    .action(async (opts: FilterOptions) => {
      const entries = await withQueue(opts.config, (q) => q.list(filterOf(opts)));
      process.stderr.write(limitNote(entries.length, opts.limit, 'raise --limit to see more'));
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(entries.map(deadLetterSummary), null, 2)}\n`);
        return;
      }
      const filtered = opts.id !== undefined || opts.table !== undefined || opts.error !== undefined || opts.olderThan !== undefined;
      if (entries.length === 0) process.stdout.write(filtered ? 'no dead-lettered change matches this filter\n' : 'dead-letter queue is empty\n');
      for (const e of entries) {
        process.stdout.write(`#${e.id} ${e.table} key=${e.rowKey} ${e.change?.op ?? 'UNDECODABLE'} lsn=${e.commitLsn ?? '-'} attempts=${e.attempts} first=${e.firstFailedAt.toISOString()}\n    ${e.errorCode}: ${e.error}\n`);
      }
    });

  dlq
    .command('show <id>')
    .description('one entry with its whole change')
    .addOption(configOption())
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { config: string; json?: boolean }) => {
      const [e] = await withQueue(opts.config, (q) => q.list({ ids: [id] }));
      if (!e) {
        // Thrown, not only written to stderr: with --json the failure is on stdout too (main.ts).
        throw new SynclineError('DLQ_NOT_FOUND', `no dead-letter entry ${id}`, { retriable: false });
      }
      const full = { ...deadLetterSummary(e), change: e.change ?? null, raw: e.raw ?? null };
      process.stdout.write(opts.json ? `${JSON.stringify(full, null, 2)}\n` : `${JSON.stringify(full, null, 2)}\n`);
    });

  withFilters(dlq.command('replay').description('re-apply entries through the normal apply path (safe: version-gated); applied entries leave the queue'))
    .option('--json', 'print JSON')
    .action(async (opts: FilterOptions) => {
      const { loadConfigFile } = await import('../../config/load.js');
      const { replayDeadLetterQueue } = await import('../../ops/replay-dead-letters.js');
      const result = await replayDeadLetterQueue(loadConfigFile(opts.config), filterOf(opts));
      const tried = result.replayed + result.failed.length + result.held.length + result.undecodable.length;
      const note = limitNote(tried, opts.limit, 'run the replay again (or raise --limit) for the rest');
      if (opts.json) process.stdout.write(`${JSON.stringify({ ...result, limit_reached: note !== '' }, null, 2)}\n`);
      else {
        process.stdout.write(`replayed ${result.replayed} (of which ${result.stale} already superseded at the target), failed again ${result.failed.length}, held back ${result.held.length}, undecodable ${result.undecodable.length}\n`);
        for (const f of result.failed) process.stdout.write(`  #${f.id}: ${f.error}\n`);
        process.stdout.write(note);
      }
      process.exitCode = result.failed.length > 0 ? EXIT.FAILURE : EXIT.OK;
    });

  withFilters(dlq.command('purge').description('delete entries (a filter or --all is required)'))
    .option('--all', 'purge every entry')
    .option('--json', 'print JSON')
    .action(async (opts: FilterOptions & { all?: boolean }, cmd: Command) => {
      const filter = filterOf(opts);
      if (!opts.all && !filter.ids && !filter.table && !filter.error && filter.olderThanMs === undefined) {
        throw new UsageError('refusing to purge without a filter: pass --id, --table, --error, --older-than, or --all');
      }
      // Every match goes unless --limit was given (with --all too): a purge by table or error
      // that silently stopped at the list's default would leave entries the user meant gone.
      const cap = opts.all || cmd.getOptionValueSource('limit') === 'default' ? Number.POSITIVE_INFINITY : Number(opts.limit);
      const removed = await withQueue(opts.config, async (q) => {
        let done = 0;
        while (done < cap) {
          const chunk = await q.list({ ...filter, limit: Math.min(PURGE_CHUNK, cap - done) });
          const gone = chunk.length === 0 ? 0 : await q.remove(chunk.map((e) => e.id));
          done += gone;
          // A short chunk was the last; nothing removed means another process took them.
          if (chunk.length < PURGE_CHUNK || gone === 0) break;
        }
        return done;
      });
      process.stdout.write(opts.json ? `${JSON.stringify({ purged: removed })}\n` : `purged ${removed} entr${removed === 1 ? 'y' : 'ies'}\n`);
    });
}
