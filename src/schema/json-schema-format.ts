/**
 * JSON Schema (draft-07): the records are today's JSON change envelope, with the values of
 * int2/int4 as JSON integers, bool as true/false and float4/float8 as JSON numbers (the
 * non-numbers NaN, Infinity, -Infinity and -0 as those strings); every other type keeps
 * PostgreSQL's text, because JSON numbers beyond 2^53 lose digits in JavaScript and many
 * other parsers. The schema describes the envelope and each column (nullable).
 */
import type { ChangeEvent, Row } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import type { ColumnPlan } from './column-plan.js';
import { checkRowColumns, eventFromEnvelope, type RowCodec, type WireEnvelope } from './envelope.js';
import { textOf, typedValueOf } from './pg-values.js';
import { META_MARK, parseMeta, type SchemaMeta } from './schema-meta.js';

const NON_NUMBERS = ['NaN', 'Infinity', '-Infinity', '-0'];

function columnSchema(c: ColumnPlan): Record<string, unknown> {
  const description = `PostgreSQL ${c.pgType}`;
  switch (c.kind) {
    case 'int':
      return { description, anyOf: [{ type: 'integer' }, { type: 'null' }] };
    case 'bool':
      return { description, anyOf: [{ type: 'boolean' }, { type: 'null' }] };
    case 'float4':
    case 'float8':
      return { description, anyOf: [{ type: 'number' }, { enum: NON_NUMBERS }, { type: 'null' }] };
    default:
      // int8 and numeric(p,s) travel as text, but an integer is declared too: then int2/int4 →
      // int8/numeric widens the column's schema (a registry's BACKWARD check accepts it).
      if (c.textFor === 'long' || c.textFor === 'decimal') return { description, anyOf: [{ type: 'string' }, { type: 'integer' }, { type: 'null' }] };
      return { description, anyOf: [{ type: 'string' }, { type: 'null' }] };
  }
}

/** Any value a column of any definition can hold in a record. */
const ANY_COLUMN_VALUE = { anyOf: [{ type: 'string' }, { type: 'integer' }, { type: 'number' }, { type: 'boolean' }, { type: 'null' }] };

/**
 * Partially open content models: the columns' properties, and any other property holding a
 * column value. A registry's compatibility check (Apicurio's and Confluent's) then accepts
 * what a table change does to the rows, in both directions: an added column (a property the
 * old model's additionalProperties covers), a dropped one (a property the new model's
 * additionalProperties still covers: records written before it validate), a rename (both).
 * A closed model refuses a dropped column under BACKWARD; an open one (any additional
 * property) refuses an added column. A changed type is still refused unless it widens.
 */
function rowSchema(cols: readonly ColumnPlan[]): Record<string, unknown> {
  return { type: 'object', properties: Object.fromEntries(cols.map((c) => [c.name, columnSchema(c)])), additionalProperties: ANY_COLUMN_VALUE };
}

export function jsonKeySchema(meta: SchemaMeta): string {
  return JSON.stringify({
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: `${meta.schema}.${meta.table} key`,
    $comment: `${META_MARK}${JSON.stringify(meta)}`,
    ...rowSchema(meta.columns.filter((c) => c.key)),
  });
}

export function jsonValueSchema(meta: SchemaMeta): string {
  const str = { type: 'string' };
  const flag = { type: 'boolean', enum: [true] };
  const nullableRow = { anyOf: [{ type: 'null' }, { $ref: '#/definitions/Row' }] };
  return JSON.stringify({
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: `${meta.schema}.${meta.table}`,
    description: `syncline change of ${meta.schema}.${meta.table}, _schema_version ${meta.schema_version}`,
    $comment: `${META_MARK}${JSON.stringify(meta)}`,
    type: 'object',
    properties: {
      source: str,
      schema: str,
      table: str,
      op: { enum: ['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'READ'] },
      lsn: str,
      commit_lsn: str,
      xid: { type: 'integer' },
      seq: { type: 'integer' },
      commit_ts: str,
      key: rowSchema(meta.columns.filter((c) => c.key)),
      payload: nullableRow,
      before: nullableRow,
      unchanged: { type: 'array', items: str },
      superseded_at_source: flag,
      _version: str,
      _schema_version: { type: 'integer' },
      tx_last: flag,
      tx_prev: str,
      snapshot_reset: flag,
    },
    required: ['source', 'schema', 'table', 'op', 'lsn', 'commit_lsn', 'xid', 'seq', 'commit_ts', 'key', 'payload', '_version', '_schema_version'],
    additionalProperties: false,
    definitions: { Row: rowSchema(meta.columns) },
  });
}

export function jsonSchemaMeta(schemaText: string, id: number): SchemaMeta {
  const parsed = JSON.parse(schemaText) as { $comment?: unknown };
  const comment = typeof parsed.$comment === 'string' && parsed.$comment.startsWith(META_MARK) ? parsed.$comment.slice(META_MARK.length) : undefined;
  return parseMeta(comment === undefined ? undefined : JSON.parse(comment), id);
}

const jsonRows: RowCodec = {
  toWire(c, text) {
    if (c.kind === 'float4' || c.kind === 'float8') {
      const v = typedValueOf(c.kind, text) as number;
      return Number.isFinite(v) && !Object.is(v, -0) ? v : text;
    }
    return typedValueOf(c.kind, text);
  },
  fromWire(c, v) {
    if (typeof v === 'string' && c.kind !== 'string') return textOf(c.kind, c.kind === 'float4' || c.kind === 'float8' ? Number(v) : v);
    return textOf(c.kind, v as string | number | boolean);
  },
};

/** Encodes and decodes the records of one JSON Schema value schema. */
export class JsonSchemaTableCodec {
  private readonly keyColumns: ColumnPlan[];
  /** Rows are keyed by column name; absent columns (unchanged TOAST values) stay absent. */
  private readonly byName: ColumnPlan[];

  constructor(readonly meta: SchemaMeta) {
    this.keyColumns = meta.columns.filter((c) => c.key);
    this.byName = meta.columns.map((c) => ({ ...c, field: c.name }));
  }

  static fromSchema(schemaText: string, id: number): JsonSchemaTableCodec {
    return new JsonSchemaTableCodec(jsonSchemaMeta(schemaText, id));
  }

  encodeValue(change: ChangeEvent): Buffer {
    const cols = this.meta.columns;
    const out: Record<string, unknown> = { ...change, key: this.keyJson(change.key) };
    out.payload = change.payload ? rowJson(cols, change.payload, change.unchanged) : null;
    if (change.before) out.before = rowJson(cols, change.before, undefined);
    return Buffer.from(JSON.stringify(out));
  }

  encodeKey(key: Row): Buffer {
    return Buffer.from(JSON.stringify(this.keyJson(key)));
  }

  /** The key columns; `{}` for a change without a key. */
  private keyJson(key: Row): Record<string, unknown> {
    for (const _ in key) return rowJson(this.keyColumns, key, undefined);
    return {};
  }

  decodeValue(payload: Buffer): ChangeEvent {
    let v: WireEnvelope<Record<string, unknown>>;
    try {
      v = JSON.parse(payload.toString('utf8')) as WireEnvelope<Record<string, unknown>>;
    } catch (err) {
      throw new SynclineError('EVENT_MALFORMED', `JSON record of ${this.meta.schema}.${this.meta.table} is not JSON: ${(err as Error).message}`, { retriable: false });
    }
    return eventFromEnvelope(v, this.byName, jsonRows, (r) => r);
  }
}

function rowJson(cols: readonly ColumnPlan[], row: Row, unchanged: readonly string[] | undefined): Record<string, unknown> {
  checkRowColumns(cols, row, unchanged);
  const out: Record<string, unknown> = {};
  for (const c of cols) {
    const text = row[c.name];
    if (text !== undefined) out[c.name] = text === null ? null : jsonRows.toWire(c, text);
  }
  return out;
}
