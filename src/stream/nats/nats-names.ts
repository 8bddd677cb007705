/**
 * Names and headers of the NATS stream. For a topic sanitized to NAME (characters outside
 * [A-Za-z0-9_-] become `_`, plus a hash suffix of the original when any was replaced, so
 * distinct topics stay distinct):
 *   stream NAME_p<N>, subjects NAME.<N>.>  one JetStream stream per partition N
 *   KV bucket NAME_positions             committed positions, group membership, delivery counts
 *   object store NAME_objects            values of records over max_payload (claim-check.ts)
 *   durable consumer <group> on NAME_p<N>  the reader of partition N for that group
 * A record's key travels in the `Syncline-Key` header (NATS messages have no key of their own)
 * and its table in `Syncline-Table`.
 */
import type { MsgHdrs } from 'nats';
import { fnv1a32 } from '../../core/change.js';

export const KEY_HEADER = 'Syncline-Key';
export const KEY_ENCODING_HEADER = 'Syncline-Key-Encoding';
export const TABLE_HEADER = 'Syncline-Table';

/** A valid stream / consumer / bucket name and subject token derived from `raw`. */
export function natsName(raw: string): string {
  const clean = raw.replace(/[^A-Za-z0-9_-]/g, '_');
  return clean === raw ? raw : `${clean}_${fnv1a32(raw).toString(16).padStart(8, '0')}`;
}

export function partitionStreamName(topic: string, partition: number): string {
  return `${natsName(topic)}_p${partition}`;
}

/** `NAME.<partition>`: the subject prefix of a partition's records. */
export function partitionSubject(topic: string, partition: number): string {
  return `${natsName(topic)}.${partition}`;
}

export function positionsBucketName(topic: string): string {
  return `${natsName(topic)}_positions`;
}

/** The object store of the topic's records over the server's max_payload (see claim-check.ts). */
export function objectsBucketName(topic: string): string {
  return `${natsName(topic)}_objects`;
}

/**
 * The subject tail of a record: `<schema>.<table>` of its key, each a valid subject token
 * (see natsName), or `_` for keys without a table. Subjects per table let NATS tools filter
 * a table's changes, e.g. `<topic>.*.public.orders`.
 */
export function tableSubjectOf(key: string): string {
  const table = tableOfKey(key);
  if (table === undefined) return '_';
  const dot = table.indexOf('.');
  return dot > 0 ? `${natsName(table.slice(0, dot))}.${natsName(table.slice(dot + 1))}` : natsName(table);
}

/**
 * `schema.table` of a key built by partitionKeyOf (`schema.table:[...]`), else the text before
 * its first colon, else undefined. The row key is the JSON array that ends the key: a name
 * may hold `:` itself (a table `"ord:x"` is `public.ord:x:["1"]`, not table `ord`), so the
 * cut is at the first `:[` whose rest is that array (parsed only when there are several).
 */
export function tableOfKey(key: string): string | undefined {
  let at = key.indexOf(':[');
  if (at > 0 && key.endsWith(']')) {
    if (key.indexOf(':[', at + 1) < 0) return key.slice(0, at);
    for (; at > 0; at = key.indexOf(':[', at + 1)) if (isJsonArray(key.slice(at + 1))) return key.slice(0, at);
  }
  const colon = key.indexOf(':');
  return colon > 0 ? key.slice(0, colon) : undefined;
}

function isJsonArray(text: string): boolean {
  try {
    return Array.isArray(JSON.parse(text));
  } catch {
    return false;
  }
}

export function keyOf(h: MsgHdrs | undefined): string {
  if (h === undefined) return '';
  const key = h.get(KEY_HEADER);
  return h.get(KEY_ENCODING_HEADER) === 'uri' ? decodeURIComponent(key) : key;
}
