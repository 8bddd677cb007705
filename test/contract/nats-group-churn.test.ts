/**
 * A NATS consumer group whose members come and go while records are published: every
 * record of every partition is handed out, each partition's records in offset order within
 * a member, and a record below a position the group stored is never handed out again.
 * Members poll and commit what they got at once (a sink that keeps up); joins and leaves
 * move partitions between them. A record handed out twice is allowed only when the first
 * member's commit of it was left out because the partition had been revoked meanwhile (the
 * new owner starts at the committed position; apply is version-gated).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import type { Stream, StreamConsumer } from '../../src/stream/stream.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const url = NATS_URL;
const PARTITIONS = 6;
const membership = { heartbeatMs: 100, sessionTimeoutMs: 1000 };
const created = natsTopicsOfThisFile('The NATS churn test', PARTITIONS);

interface Handed {
  member: number;
  partition: number;
  offset: bigint;
  /** The highest position of the partition the group had stored when it was handed out. */
  stored: bigint;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('NATS group: members joining and leaving while records are published', () => {
  it('hands every record out, in order per lease, and nothing committed again', async () => {
    const topic = `syncline-contract-nats-churn-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const streams: Stream[] = [];
    const open = async () => {
      const s = await openNatsStream({ url, topic, partitions: PARTITIONS, membership, fetchBatch: 50, bufferRecords: 600 });
      streams.push(s);
      return s;
    };
    const handed: Handed[] = [];
    const committed = new Map<number, bigint>();
    const errors: unknown[] = [];
    const storedMax = new Map<number, bigint>();
    const members: { stop: () => Promise<void> }[] = [];
    const member = async (id: number) => {
      const s = await open();
      const c: StreamConsumer = await s.consumer('g');
      let running = true;
      const loop = (async () => {
        while (running) {
          try {
            const got = await c.poll(200, 50);
            const last = new Map<number, bigint>();
            for (const r of got) {
              handed.push({ member: id, partition: r.partition, offset: r.offset, stored: storedMax.get(r.partition) ?? 0n });
              last.set(r.partition, r.offset + 1n);
            }
            if (last.size > 0) {
              await c.commit(last);
              const stored = await c.committed();
              for (const [p, o] of last) {
                // Left out when the partition was revoked meanwhile: its new owner reads it again.
                if (stored.get(p) === o && (storedMax.get(p) ?? 0n) < o) storedMax.set(p, o);
                if ((committed.get(p) ?? 0n) < o) committed.set(p, o);
              }
            }
          } catch (err) {
            errors.push(err);
            await sleep(50);
          }
        }
      })();
      const m = {
        stop: async () => {
          running = false;
          await loop;
          await c.close();
        },
      };
      members.push(m);
      return m;
    };

    const ps = await open();
    const producer = await ps.producer();
    let publishing = true;
    let sent = 0;
    const pub = (async () => {
      while (publishing) {
        await producer.publish(Array.from({ length: 30 }, (_, i) => ({ key: `public.t:["${sent + i}"]`, value: Buffer.from(`v${sent + i}`) })));
        sent += 30;
        await sleep(10);
      }
    })();
    try {
      const m1 = await member(1);
      await sleep(800);
      const m2 = await member(2);
      await sleep(800);
      const m3 = await member(3);
      await sleep(800);
      await m1.stop();
      await sleep(800);
      const m4 = await member(4);
      await sleep(800);
      await m2.stop();
      await sleep(500);
      await m3.stop();
      await sleep(800);
      publishing = false;
      await pub;
      const ends = await ps.endOffsets();
      const total = [...ends.values()].reduce((a, b) => a + b, 0n);
      expect(total).toBe(BigInt(sent));
      const until = Date.now() + 20_000;
      while (Date.now() < until && [...ends].some(([p, end]) => (committed.get(p) ?? 0n) < end)) await sleep(100);
      await m4.stop();
      expect(errors).toEqual([]);
      const problems: string[] = [];
      for (let p = 0; p < PARTITIONS; p++) {
        const end = ends.get(p) ?? 0n;
        const offsets = handed.filter((h) => h.partition === p).map((h) => h.offset);
        const seen = new Set(offsets.map(String));
        for (let o = 0n; o < end; o++) if (!seen.has(String(o))) problems.push(`p${p}: ${o} never handed out`);
        for (const h of handed) if (h.partition === p && h.offset < h.stored) problems.push(`p${p}: ${h.offset} handed out to member ${h.member} after position ${h.stored} was stored`);
        // In order within each lease of a member: a member that lost the partition and took it
        // again (its lease expired on a busy machine) starts over at the position the group had
        // stored, and only there may it go back.
        const byMember = new Map<number, Handed[]>();
        for (const h of handed.filter((x) => x.partition === p)) byMember.set(h.member, [...(byMember.get(h.member) ?? []), h]);
        for (const [m, hs] of byMember) {
          for (let i = 1; i < hs.length; i++) {
            const [before, now] = [hs[i - 1] as Handed, hs[i] as Handed];
            if (now.offset < before.offset && now.offset !== now.stored) problems.push(`p${p}: member ${m} went back from ${before.offset} to ${now.offset} (stored position ${now.stored})`);
          }
        }
      }
      expect(problems.slice(0, 20)).toEqual([]);
    } finally {
      publishing = false;
      await pub.catch(() => undefined);
      for (const m of members) await m.stop().catch(() => undefined);
      await producer.close().catch(() => undefined);
      for (const s of streams) await s.close().catch(() => undefined);
    }
  }, 90_000);
});
