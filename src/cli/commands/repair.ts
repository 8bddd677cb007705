import type { Command } from 'commander';
import { parseDuration } from '../../core/duration.js';
import { EXIT } from '../exit-codes.js';
import { configOption, durationArg, positiveIntegerArg, TABLE_ARG_HELP } from './options.js';
import { sessionOptions, tablesToVerify, type VerifyCliOptions } from './verify.js';
import { slotOf } from '../../config/slot.js';
import type { Candidate } from '../../verify/checksum.js';
import type { TableVerification } from '../../verify/compare.js';

/** More differing keys than this in one table: the table is re-read whole instead. */
const MAX_TARGETED = 10_000;

/** What repair re-reads of one table: the whole table, or the snapshots of first-key values. */
interface RereadPlan {
  whole: boolean;
  /** Distinct first-key values to re-read (a snapshot's range is inclusive). */
  firsts: Set<string>;
  /** Keys those snapshots re-read. */
  keys: number;
  /** Differing keys left alone: another writer holds a key of the same first-key value, or an unknown one may. */
  held: number;
}

/**
 * A re-read is a new write of this source, decided against the target's rows by the conflict
 * strategy with the snapshot's clock, so under conflict tracking (`keys.others` set) it
 * would overwrite the version another writer won for a key it covers. A snapshot covers
 * every key of its first-key value, and the whole table every key: so with other writers
 * holding keys of the source, only the first-key values none of those keys has are re-read,
 * and the whole table only when no other writer holds one of its keys (and every
 * difference is known: one past the re-check limit might be such a key).
 */
function rereadPlan(d: TableVerification, keys: NonNullable<TableVerification['keys']>, keyless: boolean): RereadPlan {
  const reread = [...keys.missing, ...keys.different];
  const wanted = d.differing > 0 && (keyless || d.differing > MAX_TARGETED || d.unchecked > 0);
  const others = keys.others;
  if (!others || keyless) return { whole: wanted, firsts: wanted ? new Set() : firstsOf(reread), keys: reread.length, held: 0 };
  const guarded = new Set(others.map((c) => c.values[0] as string));
  if (wanted && guarded.size === 0 && d.unchecked === 0) return { whole: true, firsts: new Set(), keys: reread.length, held: 0 };
  const free = reread.filter((c) => !guarded.has(c.values[0] as string));
  return { whole: false, firsts: firstsOf(free), keys: free.length, held: reread.length - free.length + d.unchecked };
}

const firstsOf = (keys: readonly Candidate[]): Set<string> => new Set(keys.map((c) => c.values[0] as string));

/**
 * `syncline repair`: finds drift like `verify` (checksums, lag re-checked), then re-syncs
 * only the differing keys through the normal path: rows that exist only at the target are
 * deleted through the version-gated sink (tombstoned), and missing or different rows are
 * re-read by snapshots of their key (first key column) taken by the running capture
 * (watermarked, so concurrent changes win). A keyless table, or one with more than 10,000
 * differing keys, is re-read whole. Then verifies again. Exit 0 when no drift remains.
 */
export function registerRepair(program: Command): void {
  program
    .command('repair')
    .description('re-sync the differing rows through the normal path (needs a running syncline run/capture for re-reads)')
    .addOption(configOption())
    .option('--table <name...>', `only these tables, each ${TABLE_ARG_HELP}`)
    .option('--timeout <time>', 'how long to wait for the re-read snapshots', durationArg, '10m')
    .option('--dry-run', 'list what would be deleted and re-read, change nothing')
    .option('--parallelism <n>', 'key ranges compared at once (default verify.parallelism)', positiveIntegerArg)
    .option('--lag-timeout <time>', 'how long to wait for apply to pass the source position of a differing row', durationArg)
    .option('--no-wait', 'do not wait for the running pipeline before calling a row different')
    .option('--json', 'print JSON')
    .action(async (opts: VerifyCliOptions & { config: string; timeout: string; dryRun?: boolean }) => {
      process.exitCode = EXIT.CONFIG;
      const { loadConfigFile, sourceNameOf } = await import('../../config/load.js');
      const { verifyTables } = await import('../../verify/session.js');
      const { uncarriedMessage } = await import('../../verify/shape.js');
      const config = loadConfigFile(opts.config);
      const slot = slotOf(config);
      const tables = await tablesToVerify(config, opts.table ?? slot.tables);
      const session = await sessionOptions(config, opts);
      const say = (line: string): void => {
        if (!opts.json) process.stdout.write(`${line}\n`);
      };
      const found = await verifyTables(tables, session, { keepKeys: true, sample: MAX_TARGETED });
      if (session.onProgress) process.stderr.write('\n');
      const report: Record<string, unknown>[] = [];
      if (opts.dryRun) {
        for (const d of found) {
          const keyless = d.keyColumns.length === 0;
          const plan = rereadPlan(d, d.keys ?? { missing: [], extra: [], different: [] }, keyless);
          const whole = plan.whole;
          const entry = { table: d.table, delete: d.extra, reread: [...d.missing, ...d.different], reread_table: whole, differing: d.differing, ...(plan.held > 0 ? { not_reread: plan.held } : {}) };
          report.push(entry);
          say(`${d.table}${d.target ? ` -> ${d.target}` : ''}: would delete ${keyless ? 0 : d.extra.length} target-only row(s) ${JSON.stringify(keyless ? [] : d.extra)}, ${whole ? 're-read the whole table' : `re-read ${d.missing.length + d.different.length} key(s) ${JSON.stringify([...d.missing, ...d.different])}`}`);
        }
        const drift = found.some((d) => d.differing > 0);
        if (opts.json) process.stdout.write(`${JSON.stringify({ dry_run: true, tables: report }, null, 2)}\n`);
        process.exitCode = drift ? EXIT.FAILURE : EXIT.OK;
        return;
      }
      const { default: pg } = await import('pg');
      const { SnapshotStore } = await import('../../source/snapshot-store.js');
      const { removeExtraRows } = await import('../../verify/repair.js');
      const { openSink } = await import('../../compose/sink.js');
      const source = new pg.Client(session.source);
      const sink = openSink(config);
      await source.connect();
      try {
        await sink.prepare();
        const store = new SnapshotStore(source, config.source.state_schema, slot.name);
        await store.prepare();
        const jobs: string[] = [];
        for (const [i, d] of found.entries()) {
          const t = (tables[i] as (typeof tables)[number]).table;
          const keyless = d.keyColumns.length === 0;
          const keys = d.keys ?? { missing: [], extra: [], different: [] };
          // A keyless table's rows cannot be removed one by one: its snapshot replaces them all.
          const removed = keyless ? 0 : await removeExtraRows(source, sink, t, d.keyColumns, keys.extra.map((c) => c.key), sourceNameOf(config), config.consumer.group_id);
          const plan = rereadPlan(d, keys, keyless);
          const table: string[] = [];
          if (plan.whole) table.push(await store.request(t));
          else for (const v of plan.firsts) table.push(await store.request(t, v, v));
          jobs.push(...table);
          report.push({ table: d.table, missing: d.missing.length, different: d.different.length, extra: d.extra.length, removed, snapshots: table, reread_table: plan.whole, ...(plan.held > 0 ? { not_reread: plan.held } : {}) });
          say(`${d.table}${d.target ? ` -> ${d.target}` : ''}: ${d.missing.length} missing, ${d.different.length} different, ${d.extra.length} extra -> removed ${removed}${table.length > 0 ? `, re-reading ${plan.whole ? 'the table' : `${plan.keys} key(s)`} (snapshot${table.length > 1 ? 's' : ''} #${table.join(', #')})` : ''}`);
          if (plan.held > 0) say(`  ${plan.held} differing key(s) not re-read: a snapshot of them would also re-read keys whose version another writer holds (conflict tracking), and overwrite it; re-read them with syncline snapshot if this source's version should win`);
        }
        const deadline = Date.now() + parseDuration(opts.timeout);
        if (jobs.length > 0) say('waiting for the running capture to re-read...');
        for (;;) {
          const states = await store.getMany(jobs);
          if (states.length === new Set(jobs).size && states.every((j) => j.status === 'done' || j.status === 'failed' || j.status === 'cancelled')) break;
          if (Date.now() > deadline) {
            say('timed out waiting for the snapshot(s); they stay queued for the capture');
            break;
          }
          await new Promise((r) => setTimeout(r, 200));
        }
        // The re-read rows flow through the stream; the re-check waits for apply to pass them.
        let remaining = 0;
        let unfixable: TableVerification[] = [];
        for (let attempt = 0; attempt < 10; attempt++) {
          const after = await verifyTables(tables, { ...session, onProgress: undefined });
          remaining = after.reduce((n, r) => n + r.differing, 0);
          // A re-read carries no generated column of the source either: such a table is named
          // (not left as lag), and asked again it differs again.
          unfixable = after.filter((r) => r.differing > 0 && r.uncarried !== undefined);
          if (remaining === 0 || after.every((r) => r.differing === 0 || r.uncarried !== undefined)) break;
          await new Promise((r) => setTimeout(r, 500));
        }
        const uncarried = unfixable.map((r) => ({ table: r.table, columns: (r.uncarried ?? []).map((c) => c.column), reason: uncarriedMessage(r.target ?? r.table, r.uncarried ?? []) }));
        if (opts.json) process.stdout.write(`${JSON.stringify({ tables: report, remaining_drift: remaining, ...(uncarried.length > 0 ? { uncarried } : {}) }, null, 2)}\n`);
        else if (remaining === 0) say('no drift remains');
        else if (uncarried.length > 0) {
          say(`${remaining} row(s) still differ; a re-read cannot fix these tables:`);
          for (const u of uncarried) say(`  ${u.reason}`);
        } else say(`${remaining} row(s) still differ (concurrent changes, or apply is behind): run verify again`);
        process.exitCode = remaining === 0 ? EXIT.OK : EXIT.FAILURE;
      } finally {
        await sink.close();
        await source.end();
      }
    });
}
