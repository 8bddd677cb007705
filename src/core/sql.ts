/**
 * Identifier quoting for SQL text. Values always go as bind parameters; identifiers cannot,
 * so every identifier syntaxes through here (doubling embedded quotes, as PostgreSQL does).
 */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteQualified(schema: string, table: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}

/** A string literal for the few places (replication commands) that take no bind parameters. */
export function quoteLiteral(value: string): string {
  if (value.includes('\0')) throw new Error('NUL byte in SQL literal');
  return `'${value.replace(/'/g, "''")}'`;
}

export interface TableName {
  schema: string;
  table: string;
}

/**
 * Parses `table`, `schema.table` or quoted forms such as `"My Schema"."Order"`. Unquoted
 * parts are folded to lower case, as PostgreSQL does.
 */
export function parseTableName(text: string, defaultSchema = 'public'): TableName {
  const parts: string[] = [];
  let i = 0;
  while (i < text.length) {
    if (text[i] === '"') {
      let j = i + 1;
      let part = '';
      for (;;) {
        if (j >= text.length) throw new Error(`unterminated quoted identifier in ${JSON.stringify(text)}`);
        if (text[j] === '"') {
          if (text[j + 1] === '"') { part += '"'; j += 2; continue; }
          break;
        }
        part += text[j];
        j++;
      }
      parts.push(part);
      i = j + 1;
    } else {
      const dot = text.indexOf('.', i);
      const end = dot < 0 ? text.length : dot;
      parts.push(text.slice(i, end).trim().toLowerCase());
      i = end;
    }
    if (i < text.length) {
      if (text[i] !== '.') throw new Error(`unexpected ${JSON.stringify(text[i])} in table name ${JSON.stringify(text)}`);
      i++;
    }
  }
  if (parts.length === 1 && parts[0]) return { schema: defaultSchema, table: parts[0] };
  if (parts.length === 2 && parts[0] && parts[1]) return { schema: parts[0], table: parts[1] };
  throw new Error(`not a table name: ${JSON.stringify(text)} (expected table or schema.table)`);
}
