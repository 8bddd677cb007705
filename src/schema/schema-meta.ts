import type { ColumnPlan, SchemaFormat } from './column-plan.js';
import { SynclineError } from '../core/errors.js';

/**
 * What a decoder needs to turn a record back into the exact change event, embedded in
 * every schema syncline registers (Avro: the record's `syncline` attribute; JSON Schema:
 * the `$comment`; Protobuf: a leading `// syncline:` comment). A consumer that reads the
 * schema by id from the registry therefore needs nothing else; other readers ignore it.
 */
export interface SchemaMeta {
  format: SchemaFormat;
  schema: string;
  table: string;
  schema_version: number;
  columns: ColumnPlan[];
}

export const META_MARK = 'syncline:';

export function parseMeta(json: unknown, id: number | string): SchemaMeta {
  const m = json as Partial<SchemaMeta> | null;
  if (!m || typeof m !== 'object' || typeof m.schema !== 'string' || typeof m.table !== 'string' || !Array.isArray(m.columns)) {
    throw new SynclineError('SCHEMA_FOREIGN', `schema ${id} was not written by syncline (it has no syncline metadata): its records are not change events`, { retriable: false });
  }
  return m as SchemaMeta;
}
