import type { Command } from 'commander';
import type { SynclineConfig } from '../../config/schema.js';
import { errorMessage, PrerequisiteError } from '../../core/errors.js';
import { parseTableName, type TableName } from '../../core/sql.js';
import { resolveTableArg } from '../../core/table-arg.js';
import { TableMapping } from '../../core/table-mapping.js';
import type { TableVerification } from '../../verify/compare.js';
import type { VerifySessionOptions } from '../../verify/session.js';
import { parseDuration } from '../../core/duration.js';
import { EXIT } from '../exit-codes.js';
import { configOption, durationArg, positiveIntegerArg, TABLE_ARG_HELP } from './options.js';
import { slotOf } from '../../config/slot.js';

/** Options shared by verify and repair: what to compare and how. */
export interface VerifyCliOptions {
  table?: string[];
  parallelism?: string;
  /** commander's --no-wait: false means do not wait for the pipeline. */
  wait?: boolean;
  lagTimeout?: string;
  json?: boolean;
}

/**
 * The tables to verify, with their routes, from `--table`, else the config, else (`tables: []`:
 * a `FOR ALL TABLES` or schema publication) every table the publication publishes now.
 */
export async function tablesToVerify(config: SynclineConfig, names?: string[]): Promise<{ table: ReturnType<typeof parseTableName>; route?: ReturnType<TableMapping['routeOf']> }[]> {
  const mapping = TableMapping.fromConfig(config.sink.tables);
  const withRoute = (table: TableName): { table: TableName; route?: ReturnType<TableMapping['routeOf']> } => {
    const route = mapping.routeOf(table);
    return route ? { table, route } : { table };
  };
  const slot = slotOf(config);
  const configured = slot.tables;
  if ((names === undefined || names.length === 0) && configured.length === 0) {
    const { withSource } = await import('../../compose/source-connection.js');
    const { publicationTables } = await import('../../source/catalog.js');
    const published = await withSource(config, (c) => publicationTables(c, slot.publication, config.source.state_schema));
    if (published.length === 0) throw new PrerequisiteError(`no tables to verify: publication ${slot.publication} publishes none`, 'list tables in source.slots[0].tables or pass --table');
    return published.map(withRoute);
  }
  const list = names !== undefined && names.length > 0 ? names : configured;
  // `--table` as printed (verify's own output, alerts) or as SQL: the reading the config replicates (see parseTableArg).
  // By schema and table apart: one label may name two tables (`a.b.c`: schema a or a.b).
  const exact = (t: TableName): string => JSON.stringify([t.schema, t.table]);
  const known = new Set(configured.map((t) => exact(parseTableName(t))));
  return list.map((n) => withRoute(names ? resolveTableArg(n, (t) => known.has(exact(t))) : parseTableName(n)));
}

/** Connections, parallelism, lag barrier and (on a TTY) a progress bar on stderr. */
export async function sessionOptions(config: SynclineConfig, opts: VerifyCliOptions): Promise<VerifySessionOptions> {
  if (!config.sink.url) throw new PrerequisiteError('no sink connection URL', 'set sink.url or SYNCLINE_SINK_URL');
  const { isVerifiable } = await import('../../verify/targets/open.js');
  if (!isVerifiable(config.sink.type)) throw new PrerequisiteError(`verify compares postgres, mysql and sqlite sinks; sink.type is ${config.sink.type}`, 'use a postgres, mysql or sqlite sink');
  const { sourceConnection } = await import('../../compose/source-connection.js');
  const { progressLine } = await import('../../verify/session.js');
  const { verifyWriterOf } = await import('../../config/conflict-options.js');
  const slot = slotOf(config);
  const writer = verifyWriterOf(config);
  const started = Date.now();
  const tty = process.stderr.isTTY && !opts.json;
  return {
    source: sourceConnection(config),
    targetUrl: config.sink.url,
    targetType: config.sink.type,
    parallelism: opts.parallelism ? Number(opts.parallelism) : config.verify.parallelism,
    ...(writer ? { writer } : {}),
    ...(opts.wait !== false
      ? {
          pipeline: {
            slot: slot.name,
            stateSchema: config.sink.state_schema,
            group: config.consumer.group_id,
            openStream: async () => (await import('../../compose/stream.js')).openStream(config),
            timeoutMs: parseDuration(opts.lagTimeout ?? config.verify.lag_timeout),
          },
        }
      : {}),
    ...(tty ? { onProgress: (done: number, estimate: number, table: string) => process.stderr.write(progressLine(done, estimate, started, table)) } : {}),
  };
}

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description('compare source and target by checksums computed in both databases; exit 0 no drift, 1 drift, 2 error')
    .addOption(configOption())
    .option('--table <name...>', `only these tables, each ${TABLE_ARG_HELP}`)
    .option('--parallelism <n>', 'key ranges compared at once (default verify.parallelism)', positiveIntegerArg)
    .option('--lag-timeout <time>', 'how long to wait for apply to pass the source position of a differing row (default verify.lag_timeout)', durationArg)
    .option('--no-wait', 'report differences as read, without waiting for the running pipeline to catch up')
    .option('--json', 'print the result as JSON')
    .action(async (opts: VerifyCliOptions & { config: string }) => {
      // Any failure to compare is exit 2, so that 1 always means drift.
      process.exitCode = EXIT.CONFIG;
      const { loadConfigFile } = await import('../../config/load.js');
      const { verifyTables } = await import('../../verify/session.js');
      const { openVerifyTarget } = await import('../../verify/targets/open.js');
      const config = loadConfigFile(opts.config);
      const session = await sessionOptions(config, opts);
      const results = await verifyTables(await tablesToVerify(config, opts.table), session);
      if (session.onProgress) process.stderr.write('\n');
      const drift = results.some((r) => r.differing > 0);
      // For sync_drift_rows of the running pipeline; a target that refuses it only loses the metric.
      try {
        const target = await openVerifyTarget(config.sink.type, session.targetUrl);
        try {
          await target.recordResults(config.sink.state_schema, results);
        } finally {
          await target.close();
        }
      } catch (err) {
        process.stderr.write(`warning: could not record the result in ${config.sink.state_schema}.verify_results (sync_drift_rows): ${errorMessage(err)}\n`);
      }
      if (opts.json) process.stdout.write(`${JSON.stringify({ drift, tables: results }, null, 2)}\n`);
      else for (const r of results) process.stdout.write(describeVerification(r));
      process.exitCode = drift ? EXIT.FAILURE : EXIT.OK;
    });
}

/** The text report of one table (exported for tests). */
export function describeVerification(r: TableVerification): string {
  // Counts of the first read that the re-check found behind would contradict the verdict unexplained.
  const counted = r.countsBeforeCatchUp ? ' (counted before apply caught up)' : '';
  let out = `${r.table}${r.target ? ` -> ${r.target}` : ''}: source ${r.sourceRows}, target ${r.targetRows}${counted}, ${r.differing === 0 ? 'identical' : `${r.differing} differing`} (${r.rowsPerSecond} rows/s)\n`;
  for (const w of r.warnings ?? []) out += `  warning: ${w}\n`;
  if (r.differing > 0) out += `  missing ${JSON.stringify(r.missing)}\n  extra ${JSON.stringify(r.extra)}\n  different ${JSON.stringify(r.different)}\n`;
  if (r.unsettled > 0) out += `  ${r.unsettled} row(s) changed at the source during every re-check: not counted; run verify again\n`;
  if (r.unchecked > 0) out += `  ${r.unchecked} difference(s) beyond the re-check limit were counted as read\n`;
  if ((r.otherWriters ?? 0) > 0) out += `  ${r.otherWriters} key(s) of the source that another writer wrote or deleted last at the target (conflict tracking): not drift of this source\n`;
  return out;
}
