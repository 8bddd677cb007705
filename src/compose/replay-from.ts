import { ConfigError } from '../core/errors.js';
import type { Stream } from '../stream/stream.js';

/**
 * Parses `--from`: `beginning`, an offset for every partition (`1200`), offsets per
 * partition (`0:1200,3:80`), or a time (ISO-8601, or `@` + epoch milliseconds), and returns
 * the start positions for the partitions assigned.
 */
export function replayFrom(spec: string, stream: Stream): (partitions: readonly number[]) => Promise<Map<number, bigint>> {
  const text = spec.trim();
  // The first record each partition still retains (what retention deleted cannot be replayed).
  if (text === 'beginning') return async (ps) => {
    const first = await stream.offsetsForTime(0);
    return new Map(ps.map((p) => [p, first.get(p) ?? 0n]));
  };
  if (/^\d+$/.test(text)) return async (ps) => new Map(ps.map((p) => [p, BigInt(text)]));
  if (/^\d+:\d+(,\d+:\d+)*$/.test(text)) {
    const given = new Map(text.split(',').map((pair) => {
      const [p, o] = pair.split(':');
      return [Number(p), BigInt(o as string)] as const;
    }));
    // Partitions not named keep their stored position (absent from the result).
    return async (ps) => new Map(ps.filter((p) => given.has(p)).map((p) => [p, given.get(p) as bigint]));
  }
  const ms = text.startsWith('@') ? Number(text.slice(1)) : Date.parse(text);
  if (!Number.isFinite(ms)) {
    throw new ConfigError([`--from: expected beginning, an offset, partition:offset pairs, or a time (ISO-8601 or @epoch-ms); got ${JSON.stringify(spec)}`]);
  }
  return async (ps) => {
    const offsets = await stream.offsetsForTime(ms);
    return new Map(ps.map((p) => [p, offsets.get(p) ?? 0n]));
  };
}
