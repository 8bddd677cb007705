/**
 * PostgreSQL names (any text) as Avro/Protobuf names ([A-Za-z_][A-Za-z0-9_]*), reversibly:
 * a name that already fits and does not start with `__` is kept; any other becomes `__`
 * followed by the hex of its UTF-8 bytes. Decoders get the column names back from the
 * schema's field names alone.
 */
const PLAIN = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function schemaName(pgName: string): string {
  return PLAIN.test(pgName) && !pgName.startsWith('__') ? pgName : `__${Buffer.from(pgName, 'utf8').toString('hex')}`;
}

export function pgNameOf(name: string): string {
  return name.startsWith('__') ? Buffer.from(name.slice(2), 'hex').toString('utf8') : name;
}
