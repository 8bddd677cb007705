import type { Command } from 'commander';
import pg from 'pg';
import { loadConfigFile, sourceNameOf } from '../../config/load.js';
import { PrerequisiteError } from '../../core/errors.js';
import { parseTableName } from '../../core/sql.js';
import { TableMapping } from '../../core/table-mapping.js';
import { SnapshotStore } from '../../source/snapshot-store.js';
import { compareTable } from '../../verify/compare.js';
import { removeExtraRows } from '../../verify/repair.js';
import { parseDuration } from '../duration.js';
import { EXIT } from '../exit-codes.js';
import { openSink, sourceConnection } from '../wiring.js';
import { configOption } from './options.js';

/**
 * `syncline repair`: finds drift like `verify`, then re-syncs through the normal path:
 * tables with missing or different rows are re-read by a snapshot of the running capture
 * (watermarked, so concurrent changes win), and rows that exist only at the target are
 * deleted through the version-gated sink. Exit 0 when no drift remains, 1 otherwise.
 */
export function registerRepair(program: Command): void {
  program
    .command('repair')
    .description('re-sync drifted tables through the normal path (needs a running syncline run/capture for re-reads)')
    .addOption(configOption())
    .option('--table <name...>', 'only these tables')
    .option('--timeout <time>', 'how long to wait for the re-read snapshots', '10m')
    .option('--json', 'print JSON')
    .action(async (opts: { config: string; table?: string[]; timeout: string; json?: boolean }) => {
      process.exitCode = EXIT.CONFIG;
      const config = loadConfigFile(opts.config);
      const slot = config.source.slots[0];
      if (!slot) throw new PrerequisiteError('no slot configured', 'add source.slots[0]');
      if (!config.sink.url || config.sink.type !== 'postgres') throw new PrerequisiteError('repair compares against a postgres sink', 'set sink.type: postgres and sink.url');
      // sink.tables: compared against the routed target; fixes go through the (mapping) sink in source terms.
      const mapping = TableMapping.fromConfig(config.sink.tables);
      const names = opts.table ?? slot.tables;
      if (names.length === 0) throw new PrerequisiteError('no tables to repair', 'list tables in source.slots[0].tables or pass --table');
      const source = new pg.Client(sourceConnection(config));
      const target = new pg.Client({ connectionString: config.sink.url });
      const sink = openSink(config);
      await source.connect();
      await target.connect();
      const say = (line: string): void => {
        if (!opts.json) process.stdout.write(`${line}\n`);
      };
      try {
        await sink.prepare();
        const store = new SnapshotStore(source, config.source.state_schema, slot.name);
        await store.prepare();
        const report: Record<string, unknown>[] = [];
        const jobs: string[] = [];
        for (const name of names) {
          const t = parseTableName(name);
          const drift = await compareTable(source, target, t, Number.MAX_SAFE_INTEGER, mapping.routeOf(t));
          // A keyless table's rows cannot be removed one by one: its snapshot replaces them all.
          const keyless = drift.keyColumns.length === 0;
          const removed = keyless ? 0 : await removeExtraRows(source, sink, t, drift.keyColumns, drift.extra, sourceNameOf(config), config.consumer.group_id);
          let job: string | null = null;
          if (drift.missing.length + drift.different.length + (keyless ? drift.extra.length : 0) > 0) {
            job = await store.request(t);
            jobs.push(job);
          }
          report.push({ table: drift.table, missing: drift.missing.length, different: drift.different.length, extra: drift.extra.length, removed, snapshot: job });
          say(`${drift.table}${drift.target ? ` -> ${drift.target}` : ''}: ${drift.missing.length} missing, ${drift.different.length} different, ${drift.extra.length} extra -> removed ${removed}${job ? `, re-reading (snapshot #${job})` : ''}`);
        }
        const deadline = Date.now() + parseDuration(opts.timeout);
        if (jobs.length > 0) say('waiting for the running capture to re-read...');
        for (;;) {
          const states = await Promise.all(jobs.map((id) => store.get(id)));
          if (states.every((j) => j?.status === 'done' || j?.status === 'failed')) break;
          if (Date.now() > deadline) {
            say('timed out waiting for the snapshot(s); they stay queued for the capture');
            break;
          }
          await new Promise((r) => setTimeout(r, 500));
        }
        // The re-read rows flow through the stream: give apply a moment, then check again.
        let remaining = 0;
        for (let attempt = 0; attempt < 20; attempt++) {
          remaining = 0;
          for (const name of names) {
            const t = parseTableName(name);
            remaining += (await compareTable(source, target, t, undefined, mapping.routeOf(t))).differing;
          }
          if (remaining === 0) break;
          await new Promise((r) => setTimeout(r, 500));
        }
        if (opts.json) process.stdout.write(`${JSON.stringify({ tables: report, remaining_drift: remaining }, null, 2)}\n`);
        else say(remaining === 0 ? 'no drift remains' : `${remaining} row(s) still differ (concurrent changes, or apply is behind): run verify again`);
        process.exitCode = remaining === 0 ? EXIT.OK : EXIT.FAILURE;
      } finally {
        await sink.close();
        await source.end();
        await target.end();
      }
    });
}
