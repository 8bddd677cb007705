import type { Command } from 'commander';
import { describeDiff } from '../../ops/column-diff.js';
import type { SchemaVersionReport } from '../../ops/schemas.js';
import { configOption, TABLE_ARG_HELP } from './options.js';

/** The text form of `syncline schemas`: per table, each version with its first LSN and what changed. */
export function formatSchemas(versions: readonly SchemaVersionReport[]): string {
  if (versions.length === 0) return 'no table definitions recorded yet (capture records them as it meets them)\n';
  const out: string[] = [];
  let table: string | undefined;
  for (const v of versions) {
    if (v.table !== table) {
      table = v.table;
      out.push(table);
    }
    const columns = v.columns ? `${v.columns.length} column(s)` : 'columns not recorded';
    out.push(`  v${v.version}  first LSN ${v.firstLsn}  ${v.recordedAt}  ${columns}`);
    if (v.version === 1 && v.columns) out.push(`      ${v.columns.map((c) => `${c.name} ${c.type}${c.key ? ' (key)' : ''}`).join(', ')}`);
    if (v.diff) for (const line of describeDiff(v.diff)) out.push(`      ${line}`);
  }
  return `${out.join('\n')}\n`;
}

export function registerSchemas(program: Command): void {
  program
    .command('schemas')
    .description("list each table's definitions (_schema_version) capture met, with their first LSN, time and column changes")
    .addOption(configOption())
    .option('--table <table>', `only this table, ${TABLE_ARG_HELP}`)
    .option('--json', 'print JSON')
    .action(async (opts: { config: string; table?: string; json?: boolean }) => {
      const { loadConfigFile } = await import('../../config/load.js');
      const { collectSchemaVersions } = await import('../../ops/schemas.js');
      const config = loadConfigFile(opts.config);
      const versions = await collectSchemaVersions(config, opts.table);
      process.stdout.write(opts.json ? `${JSON.stringify(versions, null, 2)}\n` : formatSchemas(versions));
    });
}
