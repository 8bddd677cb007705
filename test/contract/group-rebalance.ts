import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Stream, StreamRecord } from '../../src/stream/stream.js';

/**
 * Consumer groups on brokers that have them (Kafka natively, NATS through KV leases): two
 * members split the partitions, each assignment is positioned through startPositions, and a
 * member never returns records of partitions it no longer holds.
 */
export function describeGroupRebalance(name: string, open: (o: { partitions: number; topic: string }) => Promise<Stream>): void {
describe(`${name} stream: consumer group rebalances`, () => {
  it('splits partitions between members, positions each assignment from startPositions, and never returns revoked partitions', async () => {
    const topic = `syncline-contract-${name}-rebalance-${randomBytes(4).toString('hex')}`;
    const stream = await open({ partitions: 4, topic });
    try {
      const producer = await stream.producer();
      const sent = Array.from({ length: 200 }, (_, i) => ({ key: `public.t:["k${i % 17}"]`, value: Buffer.from(`v:${i}`) }));
      await producer.publish(sent);
      const asked: string[] = [];
      const start = (who: string) => async (partitions: readonly number[]) => {
        asked.push(`${who}:${[...partitions].sort().join(',')}`);
        return new Map(partitions.map((p) => [p, 0n] as [number, bigint]));
      };
      const a = await stream.consumer('g', { startPositions: start('a') });
      expect([...a.assignment()].sort()).toEqual([0, 1, 2, 3]);
      const firstA = await a.poll(10, 5000);
      expect(firstA.length).toBeGreaterThan(0);

      const b = await stream.consumer('g', { startPositions: start('b') });
      // a learns of the rebalance at its next heartbeat (poll keeps it alive meanwhile), b gets
      // its share once a has let go of it.
      const deadline = Date.now() + 30_000;
      while ((a.assignment().length !== 2 || b.assignment().length !== 2) && Date.now() < deadline) await a.poll(1, 200);
      expect(a.assignment().length).toBe(2);
      expect(b.assignment().length).toBe(2);
      const mine = new Set(a.assignment());
      for (const p of b.assignment()) expect(mine.has(p)).toBe(false);
      // A member neither seeks nor commits the partitions of another: seek refuses them, and
      // a commit leaves them out (revoked since polled) without touching the group's position.
      for (const p of b.assignment()) expect(() => a.seek(p, 0n)).toThrow(/not assigned to this consumer/);
      await a.commit(new Map(b.assignment().map((p) => [p, 1n] as [number, bigint])));
      for (const p of b.assignment()) expect((await b.committed()).has(p)).toBe(false);

      const readAll = async (c: typeof a, n: number): Promise<StreamRecord[]> => {
        const out: StreamRecord[] = [];
        const until = Date.now() + 20_000;
        while (out.length < n && Date.now() < until) out.push(...(await c.poll(500, 100)));
        return out;
      };
      // Kafka repositions every partition at a rebalance, NATS only the moved ones: start
      // both members' partitions over so that together they must read everything.
      for (const p of a.assignment()) a.seek(p, 0n);
      for (const p of b.assignment()) b.seek(p, 0n);
      const ends = await stream.endOffsets();
      const count = (c: typeof a): number => c.assignment().reduce((sum, p) => sum + Number(ends.get(p) ?? 0n), 0);
      const [gotA, gotB] = await Promise.all([readAll(a, count(a)), readAll(b, count(b))]);
      for (const r of gotA) expect(a.assignment()).toContain(r.partition);
      for (const r of gotB) expect(b.assignment()).toContain(r.partition);
      expect(new Set([...gotA, ...gotB].map((r) => r.value.toString())).size).toBe(sent.length);
      expect(asked.some((x) => x.startsWith('b:'))).toBe(true);
      expect(asked[0]).toBe('a:0,1,2,3');
      await b.close();
      await a.close();
    } finally {
      await stream.close();
    }
  });
});
}
