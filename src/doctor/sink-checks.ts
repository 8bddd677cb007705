import type pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { errorMessage } from '../core/errors.js';
import { quoteIdent, quoteQualified } from '../core/sql.js';
import { TableMapping, targetColumnOf } from '../core/table-mapping.js';
import { connectPostgres, describeClient, serverVersion } from '../ops/connect.js';
import type { CheckList } from './report.js';
import { BOOKKEEPING_COLUMNS } from '../sink/sql/bookkeeping.js';
import type { SourceTable } from './source-checks.js';

/** syncline's own columns at the target: never expected at the source. */
const SYNCLINE_COLUMNS = BOOKKEEPING_COLUMNS;

/**
 * Checks the sink: reachable, and each replicated table exists there with the source's
 * primary key columns and every source column (syncline adds its version columns itself).
 */
export async function checkSink(config: SynclineConfig, sourceTables: readonly SourceTable[], list: CheckList): Promise<void> {
  const sink = config.sink;
  if (sink.type !== 'postgres') {
    list.warn('sink reachable', `sink.type ${sink.type}: doctor checks postgres sinks only`);
    return;
  }
  if (!sink.url) {
    list.fail('sink reachable', 'no sink connection URL', 'set sink.url in the config or the SYNCLINE_SINK_URL environment variable');
    return;
  }
  let client: pg.Client;
  try {
    client = await connectPostgres({ connectionString: sink.url });
  } catch (err) {
    list.fail(
      'sink reachable',
      `cannot connect to the sink: ${errorMessage(err)}`,
      'check sink.url (or SYNCLINE_SINK_URL): the server must be running, the database must exist (CREATE DATABASE ...) and pg_hba.conf must admit this host and role',
    );
    return;
  }
  try {
    list.ok('sink reachable', `${describeClient(client)} (PostgreSQL ${await serverVersion(client)})`);
    // sink.tables: a routed table is expected under its target name with its target column names.
    const mapping = TableMapping.fromConfig(sink.tables);
    for (const t of sourceTables) {
      const route = mapping.routeOf(t.name);
      const mapped = route && { name: route.target, primaryKey: t.primaryKey.map((c) => targetColumnOf(route, c) ?? c), columns: t.columns.flatMap((c) => targetColumnOf(route, c) ?? []) };
      await checkTargetTable(client, mapped ?? t, list, sink.create_tables || sink.schema_evolution === 'full');
    }
  } catch (err) {
    list.fail('sink queries', `a check query failed: ${errorMessage(err)}`, 'connect to the sink with a role that can read pg_catalog');
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** `createsMissing`: the sink creates a missing table itself (`sink.create_tables`, or `schema_evolution: full`). */
async function checkTargetTable(client: pg.Client, source: SourceTable, list: CheckList, createsMissing: boolean): Promise<void> {
  const { schema, table } = source.name;
  const q = quoteQualified(schema, table);
  const check = `sink table ${schema}.${table}`;
  const { rows } = await client.query<{ pk: string[] | null; pk_name: string | null; columns: string[] | null }>(
    `SELECT (SELECT conname::text FROM pg_constraint WHERE conrelid = c.oid AND contype = 'p') AS pk_name,
            (SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
               FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
              WHERE i.indrelid = c.oid AND i.indisprimary) AS pk,
            (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns
       FROM pg_class c WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`,
    [q],
  );
  const r = rows[0];
  const wantKey = source.primaryKey;
  const keyList = (cols: readonly string[]): string => cols.map(quoteIdent).join(', ');
  if (!r) {
    if (createsMissing) {
      list.ok(check, `does not exist yet; syncline will create it from the source's definition${source.keyless ? ' (keyless: no primary key)' : wantKey.length > 0 ? ` with PRIMARY KEY (${keyList(wantKey)})` : ''} (sink.create_tables)`);
    } else {
      const shape = source.keyless ? ' and no primary key (keyless at the source: replicated as a multiset of whole rows)' : wantKey.length > 0 ? ` and PRIMARY KEY (${keyList(wantKey)})` : ' and a primary key';
      list.fail(check, 'does not exist in the sink database', `create ${q} on the target with the source's columns${shape}, or set sink.create_tables: true`);
    }
    return;
  }
  const have = r.pk ?? [];
  if (source.keyless) {
    // A multiset: rows are matched whole, duplicates are legitimate.
    const columns = new Set(r.columns ?? []);
    const missing = source.columns.filter((c) => !columns.has(c));
    if (missing.length > 0) {
      list.fail(check, `lacks source column(s) ${missing.join(', ')}: applying its changes would fail (the table would be held)`, `ALTER TABLE ${q} ${missing.map((c) => `ADD COLUMN ${quoteIdent(c)} <type as at the source>`).join(', ')};`);
    } else if (have.length > 0 && have.every((c) => source.columns.includes(c))) {
      list.warn(check, `keyless at the source, but primary key (${have.join(', ')}) at the target: duplicate rows the source may hold would be refused`, `ALTER TABLE ${q} DROP CONSTRAINT ${r.pk_name === null ? '<its primary key constraint>' : quoteIdent(r.pk_name)};`);
    } else {
      list.ok(check, 'exists; keyless at the source: replicated as a multiset of whole rows (no key needed)');
    }
    return;
  }
  if (have.length === 0) {
    list.fail(check, 'has no primary key: syncline upserts by key', `ALTER TABLE ${q} ADD PRIMARY KEY (${wantKey.length > 0 ? keyList(wantKey) : '...'});`);
    return;
  }
  if (wantKey.length > 0 && !sameSet(have, wantKey)) {
    list.fail(
      check,
      `primary key (${have.join(', ')}) differs from the source's (${wantKey.join(', ')})`,
      `ALTER TABLE ${q} DROP CONSTRAINT ${r.pk_name === null ? '<its primary key constraint>' : quoteIdent(r.pk_name)}, ADD PRIMARY KEY (${keyList(wantKey)});`,
    );
    return;
  }
  const columns = new Set(r.columns ?? []);
  const missing = source.columns.filter((c) => !columns.has(c) && !SYNCLINE_COLUMNS.has(c));
  if (missing.length > 0) {
    list.fail(check, `lacks source column(s) ${missing.join(', ')}: applying their changes would fail`, `ALTER TABLE ${q} ${missing.map((c) => `ADD COLUMN ${quoteIdent(c)} <type as at the source>`).join(', ')};`);
    return;
  }
  list.ok(check, `exists with primary key (${have.join(', ')})${wantKey.length === 0 ? '; the source table has none, its changes are keyed by REPLICA IDENTITY' : ''}`);
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}
