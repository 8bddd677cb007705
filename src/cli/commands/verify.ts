import type { Command } from 'commander';
import pg from 'pg';
import { loadConfigFile } from '../../config/load.js';
import { errorMessage, PrerequisiteError } from '../../core/errors.js';
import { parseTableName } from '../../core/sql.js';
import { TableMapping } from '../../core/table-mapping.js';
import { compareTable } from '../../verify/compare.js';
import { recordVerifyResults } from '../../verify/verify-results.js';
import { EXIT } from '../exit-codes.js';
import { sourceConnection } from '../wiring.js';
import { configOption } from './options.js';

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description('compare source and target row by row; exit 0 no drift, 1 drift, 2 error')
    .addOption(configOption())
    .option('--table <name...>', 'only these tables')
    .option('--json', 'print the result as JSON')
    .action(async (opts: { config: string; table?: string[]; json?: boolean }) => {
      // Any failure to compare is exit 2, so that 1 always means drift.
      process.exitCode = EXIT.CONFIG;
      const config = loadConfigFile(opts.config);
      if (!config.sink.url) throw new PrerequisiteError('no sink connection URL', 'set sink.url or SYNCLINE_SINK_URL');
      if (config.sink.type !== 'postgres') throw new PrerequisiteError(`verify supports postgres sinks; sink.type is ${config.sink.type}`, 'use a postgres sink');
      // sink.tables: each source table is compared with its routed target, renamed columns and all.
      const mapping = TableMapping.fromConfig(config.sink.tables);
      const names = opts.table ?? config.source.slots[0]?.tables ?? [];
      if (names.length === 0) throw new PrerequisiteError('no tables to verify', 'list tables in source.slots[0].tables or pass --table');
      const source = new pg.Client(sourceConnection(config));
      const target = new pg.Client({ connectionString: config.sink.url });
      await source.connect();
      await target.connect();
      try {
        const results = [];
        for (const n of names) {
          const t = parseTableName(n);
          results.push(await compareTable(source, target, t, undefined, mapping.routeOf(t)));
        }
        const drift = results.some((r) => r.differing > 0);
        // For sync_drift_rows of the running pipeline; a target that refuses it only loses the metric.
        await recordVerifyResults(target, config.sink.state_schema, results).catch((err: unknown) =>
          process.stderr.write(`warning: could not record the result in ${config.sink.state_schema}.verify_results (sync_drift_rows): ${errorMessage(err)}\n`),
        );
        if (opts.json) process.stdout.write(`${JSON.stringify({ drift, tables: results }, null, 2)}\n`);
        else {
          for (const r of results) {
            process.stdout.write(`${r.table}${r.target ? ` -> ${r.target}` : ''}: source ${r.sourceRows}, target ${r.targetRows}, ${r.differing === 0 ? 'identical' : `${r.differing} differing`}\n`);
            if (r.differing > 0) process.stdout.write(`  missing ${JSON.stringify(r.missing)}\n  extra ${JSON.stringify(r.extra)}\n  different ${JSON.stringify(r.different)}\n`);
          }
        }
        process.exitCode = drift ? EXIT.FAILURE : EXIT.OK;
      } finally {
        await source.end();
        await target.end();
      }
    });
}
