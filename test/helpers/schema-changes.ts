import fc from 'fast-check';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { textOf } from '../../src/schema/pg-values.js';
import type { DefinitionColumn, TableDefinition } from '../../src/schema/table-definition.js';

/** numeric(p,s) typmod. */
export function numericTypmod(precision: number, scale: number): number {
  return ((precision << 16) | (scale & 0x7ff)) + 4;
}

const MIN_TS = -210866803200000000n; // 4713-11-24 00:00:00 BC
const MAX_TS = 9224318015999999999n; // 294276-12-31 23:59:59.999999

/** PostgreSQL's text output of each kind, from typed values (checked against a real server in the integration test). */
export const pgText = {
  int2: fc.integer({ min: -32768, max: 32767 }).map(String),
  int4: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }).map(String),
  int8: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
  float4: fc.float().map((v) => textOf('float4', v)),
  float8: fc.double().map((v) => textOf('float8', v)),
  bool: fc.constantFrom('t', 'f'),
  bytea: fc.uint8Array({ maxLength: 40 }).map((b) => textOf('bytes', Buffer.from(b))),
  numeric12_3: fc.oneof(fc.bigInt({ min: -(10n ** 12n) + 1n, max: 10n ** 12n - 1n }).map((v) => textOf('decimal', v, 3)), fc.constant('NaN')),
  numeric: fc.oneof(fc.constantFrom('1.50', '1.5', '0', '-0.000001', 'NaN', 'Infinity', '-Infinity', '123456789012345678901234567890.123'), fc.double({ noNaN: true, noDefaultInfinity: true }).map(String)),
  timestamptz: fc.oneof(fc.bigInt({ min: MIN_TS, max: MAX_TS }).map((v) => textOf('timestamptz', v)), fc.constantFrom('infinity', '-infinity')),
  timestamp: fc.oneof(fc.bigInt({ min: MIN_TS, max: MAX_TS }).map((v) => textOf('timestamp', v)), fc.constantFrom('infinity', '-infinity')),
  date: fc.oneof(fc.integer({ min: -2440588, max: 2145042905 }).map((v) => textOf('date', v)), fc.constantFrom('infinity', '-infinity')),
  time: fc.bigInt({ min: 0n, max: 86_400_000_000n }).map((v) => textOf('time', v)),
  uuid: fc.uuid(),
  text: fc.string({ unit: 'grapheme', maxLength: 30 }),
  jsonb: fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
  int4_array: fc.array(fc.integer(), { maxLength: 4 }).map((a) => `{${a.join(',')}}`),
};

type TypeName = keyof typeof pgText;

/** The columns of the property tests' table: every mapped type, awkward names included. */
export const COLUMNS: readonly (DefinitionColumn & { gen: TypeName })[] = [
  { name: 'id', typeOid: 20, typeMod: -1, typeName: 'bigint', key: true, notNull: true, gen: 'int8' },
  { name: 'Tenant Id', typeOid: 23, typeMod: -1, typeName: 'integer', key: true, notNull: true, gen: 'int4' },
  { name: 'small', typeOid: 21, typeMod: -1, typeName: 'smallint', key: false, gen: 'int2' },
  { name: 'f4', typeOid: 700, typeMod: -1, typeName: 'real', key: false, gen: 'float4' },
  { name: 'f8', typeOid: 701, typeMod: -1, typeName: 'double precision', key: false, gen: 'float8' },
  { name: 'flag', typeOid: 16, typeMod: -1, typeName: 'boolean', key: false, gen: 'bool' },
  { name: 'blob', typeOid: 17, typeMod: -1, typeName: 'bytea', key: false, gen: 'bytea' },
  { name: 'price', typeOid: 1700, typeMod: numericTypmod(12, 3), typeName: 'numeric(12,3)', key: false, gen: 'numeric12_3' },
  { name: 'amount', typeOid: 1700, typeMod: -1, typeName: 'numeric', key: false, gen: 'numeric' },
  { name: 'at', typeOid: 1184, typeMod: -1, typeName: 'timestamp with time zone', key: false, gen: 'timestamptz' },
  { name: 'local_at', typeOid: 1114, typeMod: -1, typeName: 'timestamp without time zone', key: false, gen: 'timestamp' },
  { name: 'day', typeOid: 1082, typeMod: -1, typeName: 'date', key: false, gen: 'date' },
  { name: 'clock', typeOid: 1083, typeMod: -1, typeName: 'time without time zone', key: false, gen: 'time' },
  { name: 'uid', typeOid: 2950, typeMod: -1, typeName: 'uuid', key: false, gen: 'uuid' },
  { name: 'note', typeOid: 25, typeMod: -1, typeName: 'text', key: false, gen: 'text' },
  { name: 'doc', typeOid: 3802, typeMod: -1, typeName: 'jsonb', key: false, gen: 'jsonb' },
  { name: 'tags', typeOid: 1007, typeMod: -1, typeName: 'integer[]', key: false, gen: 'int4_array' },
  { name: '__under', typeOid: 25, typeMod: -1, typeName: 'text', key: false, gen: 'text' },
  { name: 'ünïcode', typeOid: 23, typeMod: -1, typeName: 'integer', key: false, gen: 'int4' },
  { name: 'message', typeOid: 25, typeMod: -1, typeName: 'text', key: false, gen: 'text' },
];

export const DEFINITION: TableDefinition = {
  schema: 'public',
  table: 'Every Type',
  schemaVersion: 3,
  columns: COLUMNS.map(({ gen: _gen, ...c }) => c),
};

function rowArb(nullable: boolean): fc.Arbitrary<Row> {
  const fields: Record<string, fc.Arbitrary<string | null>> = {};
  for (const c of COLUMNS) {
    const v = pgText[c.gen];
    fields[c.name] = nullable && !c.key ? fc.option(v, { nil: null, freq: 4 }) : v;
  }
  return fc.record(fields);
}

const lsn = fc.tuple(fc.integer({ min: 0, max: 0xff }), fc.integer({ min: 0, max: 0xffffffff })).map(([hi, lo]) => `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`);

/** Change events of DEFINITION's table, in every shape capture emits. */
export const changeArb: fc.Arbitrary<ChangeEvent> = fc
  .record({
    op: fc.constantFrom('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'READ') as fc.Arbitrary<ChangeEvent['op']>,
    row: rowArb(true),
    before: fc.option(rowArb(true), { nil: undefined }),
    unchangedMask: fc.array(fc.boolean(), { minLength: COLUMNS.length, maxLength: COLUMNS.length }),
    lsn,
    commitLsn: lsn,
    xid: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
    seq: fc.integer({ min: 1, max: 2 ** 31 }),
    ts: fc.date({ min: new Date('1990-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }),
    micros: fc.integer({ min: 0, max: 999 }),
    version: fc.bigInt({ min: 0n, max: 2n ** 96n }),
    flags: fc.record({ superseded: fc.boolean(), txLast: fc.boolean(), txPrev: fc.option(lsn, { nil: undefined }), reset: fc.boolean() }),
  })
  .map((g) => {
    const key: Row = {};
    if (g.op !== 'TRUNCATE') for (const c of COLUMNS) if (c.key) key[c.name] = g.row[c.name] ?? null;
    let payload: Row | null = null;
    let unchanged: string[] | undefined;
    if (g.op === 'INSERT' || g.op === 'UPDATE' || g.op === 'READ') {
      payload = { ...g.row };
      if (g.op === 'UPDATE') {
        for (let i = 0; i < COLUMNS.length; i++) {
          const c = COLUMNS[i] as (typeof COLUMNS)[number];
          if (!c.key && g.unchangedMask[i]) {
            delete payload[c.name];
            (unchanged ??= []).push(c.name);
          }
        }
      }
    }
    const e: ChangeEvent = {
      source: 'src',
      schema: DEFINITION.schema,
      table: DEFINITION.table,
      op: g.op,
      lsn: g.lsn,
      commit_lsn: g.commitLsn,
      xid: g.xid,
      seq: g.seq,
      commit_ts: `${g.ts.toISOString().slice(0, 23)}${String(g.micros).padStart(3, '0')}Z`,
      key,
      payload,
      _version: g.version.toString(),
      _schema_version: DEFINITION.schemaVersion,
    };
    if (g.before && (g.op === 'UPDATE' || g.op === 'DELETE')) e.before = g.before;
    if (unchanged) e.unchanged = unchanged;
    if (unchanged && g.flags.superseded) e.superseded_at_source = true;
    if (g.flags.txLast) {
      e.tx_last = true;
      if (g.flags.txPrev) e.tx_prev = g.flags.txPrev;
    }
    if (g.op === 'TRUNCATE' && g.flags.reset) e.snapshot_reset = true;
    return e;
  });
