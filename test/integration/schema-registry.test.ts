/**
 * The schema formats against a real Confluent-compatible registry (Apicurio Registry, started
 * by `bash scripts/schema-registry.sh start`; .ci/run does it) and real PostgreSQL 15 (and 17) text
 * output: syncline's codec round-trips, a third-party Confluent client
 * (@kafkajs/confluent-schema-registry) decodes the same values, the registry's BACKWARD
 * check refuses a breaking definition with the fix, and an unknown id is SCHEMA_UNKNOWN.
 */
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import avro from 'avsc';
import fc from 'fast-check';
import pg from 'pg';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { OUTPUT_SETTINGS } from '../../src/source/replication-stream.js';
import { SchemaChangeCodec } from '../../src/schema/change-codec.js';
import { planColumns, type ColumnPlan, type SchemaFormat } from '../../src/schema/column-plan.js';
import { bigLong } from '../../src/schema/avro-format.js';
import { decimalFromBytes, textOf, type TypedValue } from '../../src/schema/pg-values.js';
import { SchemaRegistryClient } from '../../src/schema/registry-client.js';
import type { TableDefinition } from '../../src/schema/table-definition.js';
import { frame } from '../../src/schema/wire-format.js';
import { PG15_URL, embeddedPg17, type PgServer } from '../helpers/postgres.js';

const ROOT = process.env.SCHEMA_REGISTRY_URL ?? 'http://127.0.0.1:8081';
const API = `${ROOT.replace(/\/+$/, '')}/apis/ccompat/v7`;
const RUN = `t${process.pid}_${Date.now().toString(36)}`;
const DB = `syncline_schema_codec_${process.pid}`;

let admin: pg.Client;
let db: pg.Client;

/** Text output for every type, as capture's session prints it. */
const asText = { getTypeParser: () => (v: string) => v } as unknown as pg.CustomTypesConfig;

beforeAll(async () => {
  try {
    const res = await fetch(`${API}/subjects`, { signal: AbortSignal.timeout(3000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
  } catch (err) {
    throw new Error(
      `no schema registry answers at ${API}/subjects (${(err as Error).message}). These tests need one: start it with \`bash scripts/schema-registry.sh start\` ` +
        '(SCHEMA_REGISTRY_PORT selects the port) or point SCHEMA_REGISTRY_URL at a Confluent-compatible registry root; .ci/run starts it.',
    );
  }
  admin = new pg.Client({ connectionString: PG15_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${DB}`);
  await admin.query(`CREATE DATABASE ${DB}`);
  const u = new URL(PG15_URL);
  u.pathname = `/${DB}`;
  db = new pg.Client({ connectionString: u.toString(), types: asText });
  await db.connect();
  await db.query(OUTPUT_SETTINGS);
});

afterAll(async () => {
  await db?.end();
  await admin?.query(`DROP DATABASE IF EXISTS ${DB}`);
  await admin?.end();
});

const TABLE_DDL = `CREATE TABLE "Mixed Types" (
  id bigint PRIMARY KEY, small smallint, i int NOT NULL, f4 real, f8 double precision, flag boolean, blob bytea,
  price numeric(12,3), amount numeric, at timestamptz, local_at timestamp, day date, clock time, uid uuid,
  note text, doc jsonb, tags int[], "Odd Name" varchar(20), span interval)`;

const ROWS = `INSERT INTO "Mixed Types" VALUES
  (1, -32768, 2147483647, 3.4028235e38, 1.7976931348623157e308, true, '\\x00ff10', 123456789.120, 1.50, '2024-02-29 23:59:59.999999+00', '1999-12-31 23:59:59.5', '2000-02-29', '24:00:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'héllo "quoted"', '{"a": [1, 2.50]}', '{1,NULL,3}', 'x y', '1 year 2 mons 3 days 04:05:06.7'),
  (9223372036854775807, 0, 0, 'NaN', '-Infinity', false, '', 'NaN', 'NaN', 'infinity', '-infinity', 'infinity', '00:00:00', '00000000-0000-0000-0000-000000000000', '', 'null', '{}', '', '-1 days'),
  (-9223372036854775808, NULL, -1, -0, 1e-310, NULL, NULL, -0.001, 'Infinity', '4713-11-24 00:00:00+00 BC', '0001-01-01 00:00:00 BC', '0001-12-31 BC', '12:34:56.000001', NULL, NULL, NULL, NULL, NULL, NULL),
  (9007199254740993, 1, 1, 1e-5, 0.1, true, '\\xdeadbeef', 99999999.999, 123456789012345678901234567890.000100, '294276-12-31 23:59:59.999999+00', '294276-12-31 23:59:59.999999', '5874897-12-31', '23:59:59.999999', NULL, 'ünï', '[]', '{{1,2},{3,4}}', NULL, NULL)`;

async function definitionOf(table: string, version: number): Promise<TableDefinition> {
  const { rows } = await db.query<{ name: string; oid: string; typmod: string; type: string; not_null: string; key_pos: string | null; attnum: string }>(
    `SELECT a.attname AS name, a.atttypid AS oid, a.atttypmod AS typmod, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
            array_position(i.indkey::int2[], a.attnum) AS key_pos, a.attnum
       FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    [`"${table}"`],
  );
  return {
    schema: 'public',
    table,
    schemaVersion: version,
    columns: rows.map((r) => ({ name: r.name, typeOid: Number(r.oid), typeMod: Number(r.typmod), typeName: r.type, notNull: r.not_null === 't', key: r.key_pos !== null, attnum: Number(r.attnum) })),
  };
}

function changeOf(def: TableDefinition, row: Row, seq: number): ChangeEvent {
  const key: Row = {};
  for (const c of def.columns) if (c.key) key[c.name] = row[c.name] ?? null;
  return {
    source: 'src', schema: def.schema, table: def.table, op: 'INSERT', lsn: `0/${(0x1000 + seq).toString(16).toUpperCase()}`, commit_lsn: '0/2000',
    xid: 4000000000, seq, commit_ts: '2026-12-04T21:00:00.123456Z', key, payload: row, _version: (0x2000n * 2n ** 32n + BigInt(seq)).toString(), _schema_version: def.schemaVersion,
    ...(seq === 4 ? { tx_last: true as const, tx_prev: '0/1000' } : {}),
  };
}

describe.each(['PostgreSQL 15', 'PostgreSQL 17'])('%s prints what the typed values print back', (server) => {
  let client: pg.Client;
  let pg17: PgServer | undefined;
  beforeAll(async () => {
    if (server === 'PostgreSQL 15') {
      client = db;
      return;
    }
    pg17 = await embeddedPg17('replica');
    client = new pg.Client({ connectionString: pg17.url('postgres'), types: asText });
    await client.connect();
    await client.query(OUTPUT_SETTINGS);
  }, 120_000);
  afterAll(async () => {
    if (pg17) {
      await client?.end();
      await pg17.stop();
    }
  });

  it('float8, float4, timestamptz, timestamp, date, time and numeric(p,s) over random values', async () => {
    // Every magnitude, and everyday values (money-like decimals, ratios), which take the fast path.
    const doubles = [
      ...fc.sample(fc.double({ noNaN: true }), 3000),
      ...fc.sample(fc.tuple(fc.integer({ min: -1e9, max: 1e9 }), fc.integer({ min: 0, max: 9999 })).map(([a, b]) => Number(`${a}.${b}`)), 2000),
      ...fc.sample(fc.integer({ min: -1e9, max: 1e9 }).map((a) => a / 7), 2000),
      ...fc.sample(fc.double({ min: -1e9, max: 1e9, noNaN: true }), 2000),
    ];
    const floats = fc.sample(fc.float({ noNaN: true }), 3000);
    const micros = fc.sample(fc.bigInt({ min: -210866803200000000n, max: 9223372036854775807n - 1n }), 2000);
    const days = fc.sample(fc.integer({ min: -2440588, max: 2145042905 }), 2000);
    const times = fc.sample(fc.bigInt({ min: 0n, max: 86_400_000_000n }), 1000);
    const decimals = fc.sample(fc.bigInt({ min: -(10n ** 12n) + 1n, max: 10n ** 12n - 1n }), 2000);
    const check = async (sqlType: string, kind: Parameters<typeof textOf>[0], values: TypedValue[], input: (v: TypedValue) => string, scale = 0, expr = `t::${sqlType}`): Promise<void> => {
      const { rows } = await client.query<{ t: string }>(`SELECT (${expr})::text AS t FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n`, [values.map(input)]);
      const mismatches = values.map((v, i) => [textOf(kind, v, scale), rows[i]?.t]).filter(([ours, theirs]) => ours !== theirs);
      expect(mismatches.slice(0, 5), `${sqlType}: ours vs PostgreSQL's`).toEqual([]);
    };
    const input = (v: TypedValue): string => (Object.is(v, -0) ? '-0' : String(v));
    await check('float8', 'float8', doubles, input);
    await check('float4', 'float4', floats, input);
    await check('timestamptz', 'timestamptz', micros, (v) => textOf('timestamptz', v));
    // The µs and day counts themselves, computed by PostgreSQL from the epoch:
    await check('timestamptz', 'timestamptz', micros, (v) => String(v), 0, `'epoch'::timestamptz + (t || ' microseconds')::interval`);
    await check('date', 'date', days, (v) => String(v), 0, `'1970-01-01'::date + t::int`);
    await check('timestamp', 'timestamp', micros, (v) => textOf('timestamp', v));
    await check('date', 'date', days, (v) => textOf('date', v));
    await check('time', 'time', times, (v) => textOf('time', v));
    await check('numeric(12,3)', 'decimal', decimals, (v) => `${v}e-3`, 3);
  });
});

/** The value a third-party reader got for a column, as PostgreSQL text (see the README's mapping table). */
function thirdPartyText(format: SchemaFormat, c: ColumnPlan, v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (format === 'protobuf') {
    if (c.kind === 'long' || c.kind === 'time') return c.kind === 'long' ? String(v) : textOf('time', BigInt(String(v)));
    if (c.kind === 'bytes') return textOf('bytes', Buffer.from(v as Uint8Array));
    return textOf(c.kind, v as TypedValue);
  }
  if (format === 'json_schema') {
    if (typeof v === 'string' && (c.kind === 'float4' || c.kind === 'float8')) return v;
    return textOf(c.kind, v as TypedValue);
  }
  // avro (avsc without logical types: decimals as bytes, timestamps/dates as numbers)
  if (typeof v === 'string') return v;
  if (c.kind === 'decimal') return textOf('decimal', decimalFromBytes(v as Buffer), c.scale);
  return textOf(c.kind, v as TypedValue);
}


describe.each(['avro', 'json_schema', 'protobuf'] as const)('%s through the registry', (format) => {
  const topic = `${RUN}_${format}`;
  let def: TableDefinition;
  let rows: Row[];
  const client = new SchemaRegistryClient({ url: API, compatibility: 'BACKWARD' });
  const codec = new SchemaChangeCodec({ format, store: client, topic, subjectStrategy: 'topic_record' });

  beforeAll(async () => {
    await db.query(`DROP TABLE IF EXISTS "Mixed Types"`);
    await db.query(TABLE_DDL);
    await db.query(ROWS);
    def = await definitionOf('Mixed Types', 1);
    rows = (await db.query<Row>('SELECT * FROM "Mixed Types" ORDER BY id')).rows;
  });

  it('decodes real PostgreSQL values to the identical change event, also in a fresh process', async () => {
    for (let i = 0; i < rows.length; i++) {
      const change = changeOf(def, rows[i] as Row, i + 1);
      const { value, key } = await codec.encode(change, def);
      expect(await codec.decode(value)).toEqual(change);
      const fresh = new SchemaChangeCodec({ format, store: new SchemaRegistryClient({ url: API }), topic, subjectStrategy: 'topic_record' });
      expect(await fresh.decode(value)).toEqual(change);
      expect(key[0]).toBe(0);
    }
  });

  it('a third-party Confluent client decodes the same values the JSON format carries', async () => {
    const registry = new SchemaRegistry({ host: API }, { [SchemaType.AVRO]: { typeHook: (s: avro.Schema) => (s === 'long' || (typeof s === 'object' && (s as { type?: string }).type === 'long') ? bigLong : undefined) } } as never);
    const plans = planColumns(def, format);
    for (let i = 0; i < rows.length; i++) {
      const change = changeOf(def, rows[i] as Row, i + 1);
      const json = JSON.parse(JSON.stringify(change)) as ChangeEvent;
      const { value, key } = await codec.encode(change, def);
      const decoded = (await registry.decode(value)) as Record<string, unknown>;
      // Protobuf: protobufjs (without keepCase) names fields in camelCase.
      const field = (o: Record<string, unknown>, name: string): unknown => (format === 'protobuf' ? o[protobuf.util.camelCase(name)] : o[name]);
      expect(field(decoded, 'commit_lsn')).toBe(json.commit_lsn);
      expect(String(field(decoded, '_version'))).toBe(json._version);
      const payload = field(decoded, 'payload') as Record<string, unknown>;
      const got: Row = {};
      for (const c of plans) got[c.name] = thirdPartyText(format, c, field(payload, format === 'json_schema' ? c.name : c.field));
      expect(got).toEqual(json.payload);
      const decodedKey = (await registry.decode(key)) as Record<string, unknown>;
      const idPlan = plans.find((c) => c.name === 'id') as ColumnPlan;
      expect(thirdPartyText(format, idPlan, field(decodedKey, 'id'))).toBe(json.key.id);
    }
  });

  it('an id the registry does not know is SCHEMA_UNKNOWN, permanent', async () => {
    await expect(codec.decode(frame(2_000_000_000, Buffer.from([2, 0])))).rejects.toMatchObject({ code: 'SCHEMA_UNKNOWN', retriable: false });
  });

  it('BACKWARD: an added column is accepted, a type change that breaks readers is refused with the fix', async () => {
    await db.query(`ALTER TABLE "Mixed Types" ADD COLUMN added int`);
    const v2 = await definitionOf('Mixed Types', 2);
    const row2 = (await db.query<Row>('SELECT * FROM "Mixed Types" ORDER BY id LIMIT 1')).rows[0] as Row;
    const c2 = changeOf(v2, row2, 1);
    expect(await codec.decode((await codec.encode(c2, v2)).value)).toEqual(c2);
    await db.query(`ALTER TABLE "Mixed Types" ALTER COLUMN i TYPE text`);
    const v3 = await definitionOf('Mixed Types', 3);
    const row3 = (await db.query<Row>('SELECT * FROM "Mixed Types" ORDER BY id LIMIT 1')).rows[0] as Row;
    const refused = codec.encode(changeOf(v3, row3, 1), v3);
    await expect(refused).rejects.toMatchObject({ code: 'SCHEMA_INCOMPATIBLE', retriable: false });
    await expect(refused).rejects.toThrow(/BACKWARD-compatible[\s\S]*fix: /);
  });
});

describe('registry client', () => {
  it('an unreachable registry is retriable and never shows the URL\'s password', async () => {
    const client = new SchemaRegistryClient({ url: 'http://user:s3cret@127.0.0.1:1/apis/ccompat/v7', timeoutMs: 2000 });
    const err = await client.register('x-value', { schemaType: 'AVRO', schema: '"string"' }).catch((e: unknown) => e as Error & { retriable: boolean; code: string });
    expect(err).toMatchObject({ code: 'SCHEMA_REGISTRY_UNAVAILABLE', retriable: true });
    expect((err as Error).message).not.toContain('s3cret');
  });

  it('an invalid schema is refused as SCHEMA_INVALID, permanent', async () => {
    const client = new SchemaRegistryClient({ url: API });
    await expect(client.register(`${RUN}-bad-value`, { schemaType: 'AVRO', schema: '{"type":"record"' })).rejects.toMatchObject({ code: 'SCHEMA_INVALID', retriable: false });
  });
});
