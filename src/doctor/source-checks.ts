import type pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { errorMessage } from '../core/errors.js';
import { parseTableName, quoteIdent, quoteLiteral, quoteQualified, type TableName } from '../core/sql.js';
import { connectPostgres, describeClient, serverVersion } from '../ops/connect.js';
import { formatBytes, type CheckList } from './report.js';
import { slotOf } from '../config/slot.js';
import { publicationTables } from '../source/catalog.js';
import { SCHEMA_VERSIONS_TABLE } from '../source/schema-version-store.js';
import { hasViaRoot, isPublished, publishesPartitions } from '../source/publication.js';

/** A source table as doctor found it, for comparison with the target. */
export interface SourceTable {
  name: TableName;
  primaryKey: string[];
  /** The replicated columns: stored generated ones are left out (pgoutput never sends them). */
  columns: string[];
  /** The generated columns, which no change carries, with their generation expressions. */
  generated?: { column: string; expression: string }[];
  /** REPLICA IDENTITY FULL (or DEFAULT) without a primary key: replicated as a multiset of whole rows. */
  keyless?: boolean;
}

/** Above this much retained WAL, doctor warns: the slot is not advancing or lags far behind. */
export const RETAINED_WAL_WARN_BYTES = 1024n ** 3n;

/**
 * Checks the source server: reachable, wal_level, free replication slots and WAL senders,
 * the role's REPLICATION attribute, the publication, every table's key or replica identity,
 * and the slot. Returns the tables found, for the sink checks.
 */
export async function checkSource(config: SynclineConfig, connection: pg.ClientConfig, list: CheckList): Promise<SourceTable[]> {
  let client: pg.Client;
  try {
    client = await connectPostgres(connection);
  } catch (err) {
    list.fail(
      'source reachable',
      `cannot connect to the source: ${errorMessage(err)}`,
      'check source.url (or SYNCLINE_SOURCE_URL / the PG* variables): the server must be running, listening on that address, and pg_hba.conf must admit this host and role',
    );
    return [];
  }
  try {
    list.ok('source reachable', `${describeClient(client)} (PostgreSQL ${await serverVersion(client)})`);
    const slotName = slotOf(config).name;
    const slot = await readSlot(client, slotName);
    await checkSettings(client, slot, list);
    const tables = await checkPublicationAndTables(config, client, list);
    checkSlot(slotName, slot, slot ? false : await streamedBefore(client, config.source.state_schema, slotName), list);
    return tables;
  } catch (err) {
    list.fail('source queries', `a check query failed: ${errorMessage(err)}`, 'connect with a role that can read pg_catalog, pg_replication_slots and pg_stat_activity');
    return [];
  } finally {
    await client.end().catch(() => undefined);
  }
}

interface SlotRow {
  database: string | null;
  current_db: string;
  plugin: string | null;
  slot_type: string;
  active: boolean;
  active_pid: number | null;
  confirmed: string | null;
  wal_status: string | null;
  retained: string | null;
}

async function readSlot(client: pg.Client, name: string): Promise<SlotRow | undefined> {
  const { rows } = await client.query<SlotRow>(
    `SELECT database, current_database() AS current_db, plugin, slot_type, active, active_pid,
            confirmed_flush_lsn::text AS confirmed, wal_status,
            pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained
       FROM pg_replication_slots WHERE slot_name = $1`,
    [name],
  );
  return rows[0];
}

async function checkSettings(client: pg.Client, slot: SlotRow | undefined, list: CheckList): Promise<void> {
  const { rows } = await client.query<{
    wal_level: string;
    max_slots: number;
    slots_used: number;
    max_senders: number;
    senders_used: number;
    role: string;
    superuser: boolean;
    replication: boolean;
    encoding: string;
  }>(
    `SELECT current_setting('wal_level') AS wal_level, current_setting('server_encoding') AS encoding,
            current_setting('max_replication_slots')::int AS max_slots,
            (SELECT count(*)::int FROM pg_replication_slots) AS slots_used,
            current_setting('max_wal_senders')::int AS max_senders,
            (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'walsender') AS senders_used,
            current_user AS role, r.rolsuper AS superuser, r.rolreplication AS replication
       FROM pg_roles r WHERE r.rolname = current_user`,
  );
  const s = rows[0];
  if (!s) throw new Error('the current role is not in pg_roles');
  const restart = 'then restart PostgreSQL (e.g. pg_ctlcluster 15 main restart)';

  if (s.wal_level === 'logical') list.ok('wal_level', 'logical');
  else list.fail('wal_level', `wal_level is '${s.wal_level}'; logical decoding needs 'logical'`, `ALTER SYSTEM SET wal_level = logical; ${restart}`);

  // Our slot, if it exists, is already counted; otherwise starting needs one free.
  const slotNeeded = slot === undefined ? 1 : 0;
  const freeSlots = s.max_slots - s.slots_used;
  const slotDetail = `${s.slots_used} of ${s.max_slots} in use, ${freeSlots} free`;
  if (freeSlots < slotNeeded) {
    list.fail(
      'max_replication_slots',
      `${slotDetail}; syncline needs one for its slot`,
      `ALTER SYSTEM SET max_replication_slots = ${s.slots_used + 1}; ${restart} — or drop an unused slot (SELECT slot_name FROM pg_replication_slots WHERE NOT active; SELECT pg_drop_replication_slot('name'))`,
    );
  } else if (freeSlots === 0) {
    list.warn('max_replication_slots', `${slotDetail} (syncline's slot exists; no room for another)`);
  } else list.ok('max_replication_slots', slotDetail);

  // A running capture of ours already holds its WAL sender.
  const senderNeeded = slot?.active ? 0 : 1;
  const freeSenders = s.max_senders - s.senders_used;
  const senderDetail = `${s.senders_used} of ${s.max_senders} WAL senders in use, ${freeSenders} free`;
  if (freeSenders < senderNeeded) {
    list.fail('max_wal_senders', `${senderDetail}; capture needs one`, `ALTER SYSTEM SET max_wal_senders = ${s.senders_used + 2}; ${restart}`);
  } else list.ok('max_wal_senders', senderDetail);

  // Capture reads every value as UTF-8; the walsender converts from the database's encoding
  // and stops at a value it cannot convert. SQL_ASCII converts nothing, so any byte that is
  // not UTF-8 stops the slot at that change for good (the WAL cannot be changed).
  if (s.encoding === 'SQL_ASCII') {
    list.warn(
      'source encoding',
      'the database is SQL_ASCII: a value holding bytes that are not UTF-8 stops capture at its change (the walsender cannot send it as UTF-8)',
      'keep every text value valid UTF-8, or move the data to a UTF8 database',
    );
  } else list.ok('source encoding', s.encoding);

  if (s.superuser) list.ok('replication privilege', `role ${s.role} is a superuser`);
  else if (s.replication) list.ok('replication privilege', `role ${s.role} has REPLICATION`);
  else {
    list.fail(
      'replication privilege',
      `role ${s.role} has neither REPLICATION nor superuser: it cannot open a replication connection or create a slot`,
      `ALTER ROLE ${quoteIdent(s.role)} WITH REPLICATION; (run as a superuser)`,
    );
  }
}

async function checkPublicationAndTables(config: SynclineConfig, client: pg.Client, list: CheckList): Promise<SourceTable[]> {
  const slot = slotOf(config);
  const name = slot.publication;
  const check = `publication ${name}`;
  const configured: TableName[] = [];
  for (const t of slot.tables) {
    try {
      configured.push(parseTableName(t));
    } catch (err) {
      list.fail(`source table ${t}`, errorMessage(err), 'write tables as name, schema.name or "Quoted Name" in source.slots[0].tables');
    }
  }
  const { rows: pubs } = await client.query<{ puballtables: boolean; pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean }>(
    'SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1',
    [name],
  );
  const pub = pubs[0];
  const listed = configured.map((t) => quoteQualified(t.schema, t.table)).join(', ');
  const viaRoot = await hasViaRoot(client);
  const createSql = `CREATE PUBLICATION ${quoteIdent(name)} ${configured.length > 0 ? `FOR TABLE ${listed}` : 'FOR ALL TABLES'}${viaRoot ? ' WITH (publish_via_partition_root = true)' : ''};`;
  let tables = configured;
  if (!pub) {
    if (slot.create_publication) {
      list.warn(
        check,
        `does not exist; syncline will create it (${configured.length > 0 ? `FOR TABLE ${listed}` : 'FOR ALL TABLES, which needs a superuser'}) because create_publication is true`,
        `nothing to do, or create it yourself: ${createSql}`,
      );
    } else {
      list.fail(check, 'does not exist and source.slots[0].create_publication is false', `${createSql} — or set create_publication: true`);
    }
  } else {
    const rows = await publicationTables(client, name);
    if (configured.length === 0) tables = rows;
    const missing: TableName[] = [];
    if (!pub.puballtables) for (const t of configured) if (!(await isPublished(client, name, t))) missing.push(t);
    const ops = (['insert', 'update', 'delete', 'truncate'] as const).filter((op) => !pub[`pub${op}`]);
    const byPartition = viaRoot && (await publishesPartitions(client, name)) && !(await client.query<{ v: boolean }>('SELECT pubviaroot AS v FROM pg_publication WHERE pubname = $1', [name])).rows[0]?.v;
    if (byPartition) {
      const fix = `ALTER PUBLICATION ${quoteIdent(name)} SET (publish_via_partition_root = true);`;
      if (slot.create_publication) list.warn(check, 'publishes partitioned tables by partition; syncline will publish them through their root because create_publication is true', `nothing to do, or: ${fix}`);
      else list.fail(check, 'publishes partitioned tables by partition: their changes would name each partition, not the table', fix);
    } else if (missing.length > 0) {
      const names = missing.map((t) => `${t.schema}.${t.table}`).join(', ');
      const alter = `ALTER PUBLICATION ${quoteIdent(name)} ADD TABLE ${missing.map((t) => quoteQualified(t.schema, t.table)).join(', ')};`;
      if (slot.create_publication) list.warn(check, `exists but lacks ${names}; syncline will add them because create_publication is true`, `nothing to do, or: ${alter}`);
      else list.fail(check, `exists but lacks ${names}: their changes would not be captured`, alter);
    } else if (ops.length > 0) {
      list.warn(
        check,
        `does not publish ${ops.join(', ')}: those changes never reach the target`,
        `ALTER PUBLICATION ${quoteIdent(name)} SET (publish = 'insert, update, delete, truncate');`,
      );
    } else {
      list.ok(check, pub.puballtables ? 'exists, FOR ALL TABLES' : `exists with ${rows.length} table(s)${configured.length > 0 ? ', including every configured one' : ''}`);
    }
  }
  if (tables.length === 0 && configured.length === 0) {
    list.warn('source tables', 'no tables listed in source.slots[0].tables and none found in the publication: nothing will be replicated', 'list the tables in source.slots[0].tables');
  }
  const found: SourceTable[] = [];
  for (const t of tables) {
    const info = await checkTable(client, t, list);
    if (info) found.push(info);
  }
  return found;
}

async function checkTable(client: pg.Client, t: TableName, list: CheckList): Promise<SourceTable | undefined> {
  const q = quoteQualified(t.schema, t.table);
  const check = `source table ${t.schema}.${t.table}`;
  const { rows } = await client.query<{
    relkind: string;
    relreplident: string;
    pk: string[] | null;
    ident_index: string | null;
    columns: string[] | null;
    generated: { column: string; expression: string }[] | null;
  }>(
    `SELECT c.relkind::text AS relkind, c.relreplident::text AS relreplident,
            (SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
               FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
              WHERE i.indrelid = c.oid AND i.indisprimary) AS pk,
            (SELECT ci.relname::text FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid
              WHERE i.indrelid = c.oid AND i.indisreplident) AS ident_index,
            (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS columns,
            (SELECT json_agg(json_build_object('column', a.attname, 'expression', pg_get_expr(d.adbin, d.adrelid)) ORDER BY a.attnum)
               FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> '') AS generated
       FROM pg_class c WHERE c.oid = to_regclass($1)`,
    [q],
  );
  const r = rows[0];
  if (!r) {
    list.fail(check, 'does not exist on the source', `create ${q} on the source, or remove it from source.slots[0].tables`);
    return undefined;
  }
  if (r.relkind !== 'r' && r.relkind !== 'p') {
    list.fail(check, `is not a table (relkind ${r.relkind}); only tables can be published`, `remove it from source.slots[0].tables`);
    return undefined;
  }
  const pk = r.pk ?? [];
  const info: SourceTable = {
    name: t,
    primaryKey: pk,
    columns: r.columns ?? [],
    ...(r.generated ? { generated: r.generated } : {}),
    keyless: pk.length === 0 && (r.relreplident === 'f' || r.relreplident === 'd'),
  };
  const keyText = pk.length > 0 ? `primary key (${pk.join(', ')})` : 'no primary key';
  const addKey = `add a primary key (ALTER TABLE ${q} ADD PRIMARY KEY (...);) or ALTER TABLE ${q} REPLICA IDENTITY FULL;`;
  switch (r.relreplident) {
    case 'd':
      if (pk.length > 0) list.ok(check, keyText);
      else {
        // Its INSERTs replicate (an insert-only table such as pgbench_history needs nothing more),
        // so syncline can run: a warning. Its UPDATEs and DELETEs would fail in the application.
        list.warn(
          check,
          'has no primary key and REPLICA IDENTITY DEFAULT: its INSERTs are replicated, but PostgreSQL rejects its UPDATEs and DELETEs once the table is published (fine for an insert-only table such as pgbench_history)',
          addKey,
        );
      }
      break;
    case 'f':
      list.ok(check, `REPLICA IDENTITY FULL, ${keyText}${pk.length === 0 ? ': replicated as a multiset of whole rows' : ''}`);
      break;
    case 'i':
      list.ok(check, `REPLICA IDENTITY USING INDEX ${r.ident_index ?? '?'}, ${keyText}`);
      break;
    default:
      list.fail(check, 'has REPLICA IDENTITY NOTHING: its UPDATEs and DELETEs cannot be replicated', pk.length > 0 ? `ALTER TABLE ${q} REPLICA IDENTITY DEFAULT;` : addKey);
  }
  return info;
}

/**
 * Capture recorded table definitions of the slot (`<state_schema>.schema_versions`): it
 * streamed from a slot of this name, so a missing one was dropped and capture refuses to make
 * it again (PostgresSource.open). False when the table is not there or cannot be read.
 */
async function streamedBefore(client: pg.Client, stateSchema: string, slot: string): Promise<boolean> {
  try {
    const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${quoteQualified(stateSchema, SCHEMA_VERSIONS_TABLE)} WHERE slot_name = $1`, [slot]);
    return (rows[0]?.n ?? 0) > 0;
  } catch {
    return false;
  }
}

function checkSlot(name: string, slot: SlotRow | undefined, dropped: boolean, list: CheckList): void {
  const check = `slot ${name}`;
  const drop = `SELECT pg_drop_replication_slot(${quoteLiteral(name)});`;
  if (!slot && dropped) {
    list.fail(
      check,
      'does not exist, but capture streamed from it before (its table definitions are recorded): it was dropped, and the changes since its last confirmed position are in no slot',
      'syncline resync -c <config> (new slot + snapshot of every table), then syncline run, then syncline repair (removes rows deleted meanwhile)',
    );
    return;
  }
  if (!slot) {
    list.ok(check, 'does not exist yet; syncline will create it (pgoutput) on first start');
    return;
  }
  if (slot.database !== slot.current_db) {
    list.fail(check, `exists in another database (${slot.database ?? 'physical slot'})`, `choose another slot name in source.slots[0].name, or drop it there: ${drop}`);
    return;
  }
  if (slot.slot_type !== 'logical' || slot.plugin !== 'pgoutput') {
    list.fail(check, `uses plugin ${slot.plugin ?? slot.slot_type}; syncline needs pgoutput`, `choose another slot name, or drop it: ${drop}`);
    return;
  }
  const retained = BigInt(slot.retained ?? '0');
  const position = `confirmed ${slot.confirmed ?? 'never'}, retains ${formatBytes(retained)} of WAL${slot.wal_status ? ` (wal_status ${slot.wal_status})` : ''}`;
  if (slot.wal_status === 'lost') {
    list.fail(
      check,
      `is lost: the server removed WAL the slot still needed, so changes since ${slot.confirmed ?? 'its creation'} cannot be read (${position})`,
      // The recovery capture names (slot.ts): dropped by hand, capture refuses a slot it streamed from.
      'syncline resync -c <config> (drops it, new slot + snapshot of every table), then syncline run, then syncline repair (removes rows deleted meanwhile). To avoid a repeat, raise max_slot_wal_keep_size or keep capture running',
    );
    return;
  }
  if (slot.active) {
    list.warn(
      check,
      `in use by process ${slot.active_pid ?? '?'} (another syncline capture?); ${position}`,
      `nothing to do if that is your running syncline; otherwise stop it, or end it with SELECT pg_terminate_backend(${slot.active_pid ?? 'pid'});`,
    );
    return;
  }
  if (slot.wal_status === 'unreserved') {
    list.warn(check, `WAL it needs is about to be removed (max_slot_wal_keep_size reached); ${position}`, 'start syncline capture now so the slot advances, or raise max_slot_wal_keep_size');
    return;
  }
  if (retained > RETAINED_WAL_WARN_BYTES) {
    list.warn(check, `retains more than 1 GiB of WAL; ${position}`, 'start syncline capture so the slot advances; if the slot is no longer used, drop it: ' + drop);
    return;
  }
  list.ok(check, `exists, inactive; ${position}`);
}
