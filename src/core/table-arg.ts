import { parseTableName, type TableName } from './sql.js';

/**
 * A table named on the command line (`--table`, `snapshot TABLE`). syncline prints a table as
 * `schema.table` with its names as they are (`My Schema.Order Items`, `public.Orders`: dlq list,
 * status, verify, metric labels, alerts); SQL folds unquoted names to lower case and quotes the
 * others (`"My Schema"."Order Items"`). A table argument takes both, and a bare `table` (schema
 * public), as every command that takes one does through here:
 *
 * - with a double quote it is SQL (parseTableName): quoted parts exact, unquoted ones folded;
 * - without, it has up to two readings: as printed (split at the first dot, case kept) and as
 *   SQL (folded). The first reading that names a table the command knows wins (the printed one
 *   when both do: it is exactly what syncline showed);
 * - when neither is known, the SQL reading if the text is plain SQL identifiers (`Orders` is
 *   `public.orders`, as in the config's table lists), else the printed one: `My Schema.Order
 *   Items` cannot be unquoted SQL.
 */
export interface TableArg {
  /** The candidate tables, best first (one or two). */
  readings: TableName[];
  /** The reading taken when none of them is known. */
  fallback: TableName;
}

const PLAIN_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]*$/;

export function parseTableArg(text: string): TableArg {
  const trimmed = text.trim();
  if (trimmed.includes('"')) {
    // SQL; a label syncline printed may hold double quotes too (`public.Mixed "Case"`), and
    // then is no SQL name: it is read as printed.
    let sql: TableName | undefined;
    try {
      sql = parseTableName(trimmed);
    } catch (err) {
      if (!trimmed.includes('.')) throw err;
    }
    if (sql) return { readings: [sql], fallback: sql };
    const printed = printedReadings(trimmed);
    const first = printed[0];
    if (!first) throw new Error(`not a table name: ${JSON.stringify(text)} (expected table or schema.table)`);
    return { readings: printed, fallback: first };
  }
  const readings = printedReadings(trimmed);
  const printed = readings[0] ?? { schema: 'public', table: '' };
  let sql: TableName | undefined;
  try {
    sql = parseTableName(trimmed);
  } catch {
    // `a.b.c` is no SQL name; as printed it is schema `a`, table `b.c` (or `a.b`, `c`).
  }
  if (!printed.schema || !printed.table) {
    if (!sql) throw new Error(`not a table name: ${JSON.stringify(text)} (expected table or schema.table)`);
    return { readings: [sql], fallback: sql };
  }
  if (!sql || sameTable(sql, printed)) return { readings, fallback: printed };
  const plain = trimmed.split('.').every((part) => PLAIN_IDENTIFIER.test(part.trim()));
  return { readings: [printed, sql], fallback: plain ? sql : printed };
}

/**
 * `text` as printed (`schema.table`, names as they are): split at each of its dots, the
 * first first, because a schema may hold a dot as well as a table (`Odd.Schema.T` is schema
 * `Odd`, table `Schema.T`, or schema `Odd.Schema`, table `T`); no dot: schema public.
 */
function printedReadings(text: string): TableName[] {
  if (!text.includes('.')) return [{ schema: 'public', table: text }];
  const out: TableName[] = [];
  for (let dot = text.indexOf('.'); dot >= 0; dot = text.indexOf('.', dot + 1)) {
    const schema = text.slice(0, dot);
    const table = text.slice(dot + 1);
    if (schema && table) out.push({ schema, table });
  }
  return out.length > 0 ? out : [{ schema: '', table: '' }];
}

/** The table `text` names among those `known` answers for (see parseTableArg). */
export function resolveTableArg(text: string, known: (t: TableName) => boolean): TableName {
  const arg = parseTableArg(text);
  return arg.readings.find(known) ?? arg.fallback;
}

/** resolveTableArg with a lookup that asks a database. */
export async function resolveTableArgAsync(text: string, known: (t: TableName) => Promise<boolean>): Promise<TableName> {
  const arg = parseTableArg(text);
  if (arg.readings.length === 1) return arg.fallback;
  for (const t of arg.readings) if (await known(t)) return t;
  return arg.fallback;
}

/**
 * The `schema.table` labels a filter on `text` may mean, best first: a store of labelled
 * entries (dead letters, conflicts) keeps the first one it has entries of.
 */
export function tableArgLabels(text: string): string[] {
  return parseTableArg(text).readings.map(labelOf);
}

/** The first of `labels` that `present` holds; undefined when none. */
export function firstPresent(labels: readonly string[], present: ReadonlySet<string>): string | undefined {
  return labels.find((l) => present.has(l));
}

function labelOf(t: TableName): string {
  return `${t.schema}.${t.table}`;
}

function sameTable(a: TableName, b: TableName): boolean {
  return a.schema === b.schema && a.table === b.table;
}
