import type { Command } from 'commander';
import type pg from 'pg';
import type { SynclineConfig } from '../../config/schema.js';
import { PrerequisiteError } from '../../core/errors.js';
import { quoteQualified } from '../../core/sql.js';
import { tableArgLabels } from '../../core/table-arg.js';
import type { RecordedConflictRow } from '../../sink/conflicts/recorded-conflict.js';
import { EXIT } from '../exit-codes.js';
import { configOption, positiveIntegerArg, TABLE_ARG_HELP } from './options.js';

/** One recorded conflict between writers (`<sink.state_schema>.conflicts`). */
export interface ConflictEntry {
  id: number;
  detectedAt: string;
  table: string;
  key: unknown;
  strategy: string;
  /** The source whose version stayed: the incoming one's or the stored one's writer. */
  winner: string;
  loser: string;
  incomingSource: string;
  storedSource: string;
  incomingLsn: string;
  incomingClock: string | null;
  storedClock: string | null;
  incoming: unknown;
  stored: unknown;
  written: unknown;
}

/** The newest `limit` conflicts recorded at a postgres, mysql or sqlite sink, newest first; empty when none was ever recorded. */
export async function listConflicts(config: SynclineConfig, filter: { table?: string; limit: number }): Promise<ConflictEntry[]> {
  // The table as printed or as SQL: the first reading with recorded conflicts (see parseTableArg).
  const tables = filter.table === undefined ? {} : { tables: tableArgLabels(filter.table) };
  // Each sink's client library is loaded only for that sink (see cli/main.ts).
  if (config.sink.type === 'mysql' && config.sink.url) {
    const { readMysqlConflicts } = await import('../../sink/mysql/mysql-conflicts.js');
    return (await readMysqlConflicts(config.sink.url, config.sink.state_schema, { limit: filter.limit, ...tables })).map(entryOf);
  }
  if (config.sink.type === 'sqlite' && config.sink.url) {
    const { listSqliteConflicts } = await import('../../sink/sqlite/sqlite-conflicts.js');
    return listSqliteConflicts(config.sink.url, config.sink.state_schema, { limit: filter.limit, ...tables }).map(entryOf);
  }
  if (config.sink.type !== 'postgres' || !config.sink.url) {
    throw new PrerequisiteError(`conflicts are recorded by the SQL sinks only: postgres, mysql, sqlite (this config uses sink.type: ${config.sink.type})`, 'point -c at the config of a postgres, mysql or sqlite sink with sink.url');
  }
  const { connectPostgres } = await import('../../ops/connect.js');
  const client: pg.Client = await connectPostgres({ connectionString: config.sink.url });
  try {
    const table = quoteQualified(config.sink.state_schema, 'conflicts');
    const { rows: exists } = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table]);
    if (!exists[0]?.t) return [];
    const { rows } = await client.query<RecordedConflictRow>(
      `SELECT id::text, detected_at::text, table_name, row_key, strategy, winner, incoming_source, stored_source, incoming_lsn::text,
              incoming_clock, stored_clock, incoming_version, stored_version, written
         FROM ${table} WHERE ($1::text[] IS NULL OR table_name = (SELECT l FROM unnest($1::text[]) WITH ORDINALITY AS u(l, i) WHERE EXISTS (SELECT 1 FROM ${table} c WHERE c.table_name = u.l) ORDER BY i LIMIT 1))
        ORDER BY id DESC LIMIT $2`,
      [tables.tables ?? null, filter.limit],
    );
    return rows.map(entryOf);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** A recorded conflict as `conflicts list` shows it. */
function entryOf(r: RecordedConflictRow): ConflictEntry {
  const incomingWon = r.winner === 'incoming';
  return {
    id: Number(r.id),
    detectedAt: r.detected_at,
    table: r.table_name,
    key: JSON.parse(r.row_key) as unknown,
    strategy: r.strategy,
    winner: incomingWon ? r.incoming_source : r.stored_source,
    loser: incomingWon ? r.stored_source : r.incoming_source,
    incomingSource: r.incoming_source,
    storedSource: r.stored_source,
    incomingLsn: r.incoming_lsn,
    incomingClock: r.incoming_clock,
    storedClock: r.stored_clock,
    incoming: r.incoming_version,
    stored: r.stored_version,
    written: r.written,
  };
}

function formatConflicts(entries: readonly ConflictEntry[]): string {
  if (entries.length === 0) return 'no conflicts recorded\n';
  const lines = entries.map(
    (e) => `${e.detectedAt}  ${e.table} ${JSON.stringify(e.key)}  ${e.strategy}: ${e.winner} won over ${e.loser}  (incoming ${e.incomingSource} @ ${e.incomingLsn}, clocks ${e.incomingClock ?? '?'} vs ${e.storedClock ?? '?'})`,
  );
  return `${lines.join('\n')}\n`;
}

export function registerConflicts(program: Command): void {
  const conflicts = program.command('conflicts').description('conflicts between writers recorded by the sink (fan-in, bidirectional)');
  conflicts
    .command('list')
    .description('list recorded conflicts, newest first, with both versions and the winner; exit 0, or 2 without a postgres, mysql or sqlite sink')
    .addOption(configOption())
    .option('--table <table>', `only this table, ${TABLE_ARG_HELP}`)
    .option('--limit <n>', 'at most this many', (v) => Number(positiveIntegerArg(v)), 50)
    .option('--json', 'print the conflicts as JSON')
    .action(async (opts: { config: string; table?: string; limit: number; json?: boolean }) => {
      const { loadConfigFile } = await import('../../config/load.js');
      const config = loadConfigFile(opts.config);
      if (config.sink.type !== 'postgres' && config.sink.type !== 'mysql' && config.sink.type !== 'sqlite') process.exitCode = EXIT.CONFIG; // kept by main's error report
      const entries = await listConflicts(config, { limit: opts.limit, ...(opts.table !== undefined ? { table: opts.table } : {}) });
      process.stdout.write(opts.json ? `${JSON.stringify(entries, null, 2)}\n` : formatConflicts(entries));
      process.exitCode = EXIT.OK;
    });
}
