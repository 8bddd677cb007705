import type { SynclineConfig } from '../config/schema.js';
import { errorMessage } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';
import { TableMapping, targetColumnOf } from '../core/table-mapping.js';
import type { CheckList } from './report.js';
import { openTargetCatalog, type TargetCatalog, type TargetTableShape } from './target-catalog.js';
import { closeRedis, openRedis } from '../redis/redis-client.js';
import { BOOKKEEPING_COLUMNS } from '../sink/sql/bookkeeping.js';
import type { SourceTable } from './source-checks.js';

/** syncline's own columns at the target: never expected at the source. */
const SYNCLINE_COLUMNS = BOOKKEEPING_COLUMNS;

/**
 * Checks the sink: reachable, and (postgres, mysql, sqlite) each replicated table exists there
 * with the source's primary key columns and every source column (syncline adds its version
 * columns itself). Redis is checked for reachability; a webhook is not called.
 */
export async function checkSink(config: SynclineConfig, sourceTables: readonly SourceTable[], list: CheckList): Promise<void> {
  const sink = config.sink;
  if (!sink.url) {
    list.fail('sink reachable', 'no sink connection URL', 'set sink.url in the config or the SYNCLINE_SINK_URL environment variable');
    return;
  }
  if (sink.type === 'redis') return checkRedis(sink.url, list);
  if (sink.type === 'webhook') {
    list.warn('sink reachable', 'sink.type webhook: doctor does not call the endpoint (a test request could have effects)');
    return;
  }
  let catalog: TargetCatalog;
  try {
    catalog = await openTargetCatalog(sink.type, sink.url);
  } catch (err) {
    list.fail('sink reachable', `cannot connect to the sink: ${redactUrl(errorMessage(err))}`, REACH_FIX[sink.type]);
    return;
  }
  try {
    list.ok('sink reachable', catalog.description);
    // A missing table is made by the sink from the source's definition when so configured.
    const creates = sink.type === 'postgres' && sink.create_tables ? 'sink.create_tables' : sink.schema_evolution === 'full' ? 'sink.schema_evolution: full' : undefined;
    // sink.tables: a routed table is expected under its target name with its target column names.
    const mapping = TableMapping.fromConfig(sink.tables);
    for (const t of sourceTables) {
      const route = mapping.routeOf(t.name);
      const mapped = route && {
        ...t,
        name: route.target,
        primaryKey: t.primaryKey.map((c) => targetColumnOf(route, c) ?? c),
        columns: t.columns.flatMap((c) => targetColumnOf(route, c) ?? []),
        generated: (t.generated ?? []).flatMap((g) => {
          const column = targetColumnOf(route, g.column);
          return column === undefined ? [] : [{ ...g, column }];
        }),
      };
      await checkTargetTable(catalog, mapped ?? t, creates, list);
    }
  } catch (err) {
    list.fail('sink queries', `a check query failed: ${errorMessage(err)}`, `connect to the sink with a role that can read the catalog (${sink.type === 'postgres' ? 'pg_catalog' : 'information_schema'})`);
  } finally {
    await catalog.close();
  }
}

const REACH_FIX = {
  postgres: 'check sink.url (or SYNCLINE_SINK_URL): the server must be running, the database must exist (CREATE DATABASE ...) and pg_hba.conf must admit this host and role',
  mysql: 'check sink.url (or SYNCLINE_SINK_URL): mysql://user:password@host:3306/database; the server must be running, the database must exist (CREATE DATABASE ...) and the user must be allowed from this host',
  sqlite: 'check sink.url (or SYNCLINE_SINK_URL): sqlite:///absolute/path.db; the sink creates the file on its first run (syncline run or apply), then doctor can check its tables',
} as const;

async function checkRedis(url: string, list: CheckList): Promise<void> {
  const redis = openRedis(url);
  // ioredis rejects connect() with "Connection is closed."; the socket's own error says why.
  let cause: unknown;
  redis.on('error', (err: unknown) => (cause ??= err));
  try {
    await redis.connect();
    const info = await redis.info('server');
    list.ok('sink reachable', `${redactUrl(url)} (Redis ${/redis_version:(\S+)/.exec(info)?.[1] ?? '?'})`);
  } catch (err) {
    list.fail('sink reachable', `cannot connect to the sink: ${redactUrl(errorMessage(cause ?? err))}`, 'check sink.url (or SYNCLINE_SINK_URL): redis://[:password@]host:6379[/db]; the server must be running');
  } finally {
    await closeRedis(redis);
  }
}

/** `creates`: the setting with which the sink creates a missing table itself, if any. */
async function checkTargetTable(catalog: TargetCatalog, source: SourceTable, creates: string | undefined, list: CheckList): Promise<void> {
  const name = source.name;
  const q = catalog.qualified(name);
  const check = `sink table ${name.schema}.${name.table}`;
  const found = await catalog.describeTable(name);
  const wantKey = source.primaryKey;
  if (!found) {
    const key = wantKey.length > 0 ? `PRIMARY KEY (${catalog.quoteList(wantKey)})` : '';
    if (creates) {
      list.ok(check, `does not exist yet; syncline will create it from the source's definition${source.keyless ? ' (keyless: no primary key)' : key ? ` with ${key}` : ''} (${creates})`);
    } else {
      const shape = source.keyless ? ' and no primary key (keyless at the source: replicated as a multiset of whole rows)' : key ? ` and ${key}` : ' and a primary key';
      list.fail(check, 'does not exist in the sink database', `create ${q} on the target with the source's columns${shape}, or set ${catalog.createsTablesWith}`);
    }
    return;
  }
  warnUncarried(catalog, source, found, check, list);
  const have = found.primaryKey;
  if (source.keyless) {
    // A multiset: rows are matched whole, duplicates are legitimate.
    const columns = new Set(found.columns);
    const missing = source.columns.filter((c) => !columns.has(c));
    if (missing.length > 0) {
      list.fail(check, `lacks source column(s) ${missing.join(', ')}: applying its changes would fail (the table would be held)`, catalog.addColumns(name, missing));
    } else if (have.length > 0 && have.every((c) => source.columns.includes(c))) {
      list.warn(check, `keyless at the source, but primary key (${have.join(', ')}) at the target: duplicate rows the source may hold would be refused`, catalog.dropPrimaryKey(name, found));
    } else {
      list.ok(check, 'exists; keyless at the source: replicated as a multiset of whole rows (no key needed)');
    }
    return;
  }
  if (have.length === 0) {
    list.fail(check, 'has no primary key: syncline upserts by key', wantKey.length > 0 ? catalog.addPrimaryKey(name, wantKey) : `add a primary key to ${q}`);
    return;
  }
  if (wantKey.length > 0 && !sameSet(have, wantKey)) {
    list.fail(check, `primary key (${have.join(', ')}) differs from the source's (${wantKey.join(', ')})`, catalog.addPrimaryKey(name, wantKey, found));
    return;
  }
  const columns = new Set(found.columns);
  const missing = source.columns.filter((c) => !columns.has(c) && !SYNCLINE_COLUMNS.has(c));
  if (missing.length > 0) {
    list.fail(check, `lacks source column(s) ${missing.join(', ')}: applying their changes would fail`, catalog.addColumns(name, missing));
    return;
  }
  const loose = found.looseKeys ?? [];
  if (loose.length > 0) {
    list.warn(
      check,
      `key column(s) ${loose.map((k) => `${k.column} (${k.collation})`).join(', ')} under a collation that calls different texts equal ('a' and 'A', or 'b' and 'b '): two such source keys would share one target row, the other row lost there`,
      `ALTER TABLE ${q} ${loose.map((k) => `MODIFY ${catalog.quoteList([k.column])} ${k.type} COLLATE ${k.collation.split('_')[0] ?? 'utf8mb4'}_nopad_bin NOT NULL`).join(', ')}; (MySQL 8: utf8mb4_0900_bin)`,
    );
    return;
  }
  list.ok(check, `exists with primary key (${have.join(', ')})${wantKey.length === 0 ? '; the source table has none, its changes are keyed by REPLICA IDENTITY' : ''}`);
}

/**
 * A generated column of the source that the target keeps as a plain column: logical decoding
 * does not send generated columns (PostgreSQL before 18), so syncline never writes it there
 * and it stays NULL (or keeps what it held). One the target left out or generates itself
 * (a `pg_dump --schema-only` copy) is fine.
 */
function warnUncarried(catalog: TargetCatalog, source: SourceTable, found: TargetTableShape, check: string, list: CheckList): void {
  const generatedThere = new Set(found.generated ?? []);
  const plain = (source.generated ?? []).filter((g) => found.columns.includes(g.column) && !generatedThere.has(g.column));
  if (plain.length === 0) return;
  const names = plain.map((g) => g.column).join(', ');
  list.warn(
    check,
    `column(s) ${names}: generated at the source, a plain column here; PostgreSQL's logical decoding does not send generated columns, so syncline never writes them (they stay NULL) and verify reports the rows as different`,
    `declare them GENERATED ALWAYS AS (...) STORED at the target too (${plain.map((g) => `${g.column} GENERATED ALWAYS AS ${g.expression} STORED`).join(', ')}), or drop the column at the target (${plain.map((g) => `ALTER TABLE ${catalog.qualified(source.name)} DROP COLUMN ${catalog.quoteList([g.column])};`).join(' ')})`,
  );
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}
