import type { SynclineConfig } from '../config/schema.js';
import { sourceNameOf } from '../config/load.js';
import { errorMessage } from '../core/errors.js';
import { quoteQualified } from '../core/sql.js';
import { tableLabel } from '../core/table-mapping.js';
import { parseTableName } from '../core/sql.js';
import { WriterBoundaries } from '../pipeline/writer-boundaries.js';
import { connectPostgres } from '../ops/connect.js';
import type { CheckList } from './report.js';

const CHECK = 'sink writers';

/**
 * Many writers into one sink: warns when two sources write a table without a conflict
 * strategy (declared in `sink.writers`, or seen as several consumer groups in a postgres
 * sink's positions), since their LSNs are not comparable and the larger would win silently.
 */
export async function checkWriters(config: SynclineConfig, list: CheckList): Promise<void> {
  const s = config.sink;
  const deltas = new Set(Object.keys(s.delta_columns).map((t) => tableLabel(parseTableName(t))));
  const strategy = s.conflict_strategy !== 'source_lsn_priority';
  const boundaries = new WriterBoundaries(s.writers);
  const warnings: string[] = [];
  for (const [table, owners] of boundaries.shared()) {
    if (!strategy && !deltas.has(table)) warnings.push(`${table} is written by ${owners.join(', ')} without a conflict strategy`);
  }
  const own = sourceNameOf(config);
  if (!boundaries.isEmpty && !Object.prototype.hasOwnProperty.call(s.writers, own)) {
    warnings.push(`this source (${own}) owns no table in sink.writers: its changes to declared tables are dead-lettered (NOT_OWNER)`);
  }
  if (!strategy && s.type === 'postgres' && s.url && boundaries.isEmpty) {
    const groups = await sinkGroups(s.url, s.state_schema).catch((err: unknown) => {
      warnings.push(`could not read the sink's consumer groups: ${errorMessage(err)}`);
      return [];
    });
    if (groups.length > 1) warnings.push(`${groups.length} consumer groups write this sink (${groups.join(', ')}) with conflict_strategy source_lsn_priority and no sink.writers`);
  }
  if (warnings.length === 0) {
    list.ok(CHECK, strategy ? `conflicts decided by ${s.conflict_strategy}` : 'one writer per table');
    return;
  }
  list.warn(
    CHECK,
    warnings.join('; '),
    'give each table one writer (sink.writers), or set sink.conflict_strategy (last_write_wins, source_priority) or delta_columns: see README "Many writers"',
  );
}

/** Consumer groups with positions stored in a postgres sink. */
async function sinkGroups(url: string, stateSchema: string): Promise<string[]> {
  const client = await connectPostgres({ connectionString: url });
  try {
    const table = quoteQualified(stateSchema, 'positions');
    const { rows } = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table]);
    if (!rows[0]?.t) return [];
    const groups = await client.query<{ g: string }>(`SELECT DISTINCT group_id AS g FROM ${table} ORDER BY 1`);
    return groups.rows.map((r) => r.g);
  } finally {
    await client.end().catch(() => undefined);
  }
}
