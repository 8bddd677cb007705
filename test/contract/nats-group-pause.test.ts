/**
 * A NATS group member whose event loop is blocked past the session timeout (a busy loop: no
 * heartbeat, no timer, no socket read), while the other member takes its partitions over.
 * When it resumes, its first heartbeat gets through before its next tick has looked at the
 * leases: until then it must hand out nothing of, and commit nothing for, the partitions the
 * other member now reads.
 *
 * The paused member runs in a child process (a busy loop would block this one too). After it
 * resumes it polls with a short wait, and after each poll that returned records it reads the
 * lease of each of their partitions: a lease of another member means it handed out records
 * another member was reading. Right after the pause it commits a batch it polled before it
 * (its apply was what blocked): a position stored for a partition the other member reads
 * from its committed position would make that member's successor skip what it did not apply.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import { ROOT, ensureBuilt } from '../helpers/cli.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const url = NATS_URL;
const PARTITIONS = 8;
const membership = { heartbeatMs: 100, sessionTimeoutMs: 1000 };
const created = natsTopicsOfThisFile('The NATS pause test', PARTITIONS);

interface PausedReport {
  /** Records handed out after the pause whose partition's lease was another member's. */
  foreign: string[];
  /** Positions its commit, right after the pause, of a batch polled before it stored for the other member's partitions. */
  committed: string[];
  /** Records handed out after the pause. */
  after: number;
}

/** Member A: joins, waits for "pause" on stdin, busy-loops `pauseMs`, then polls and commits. */
function pausedMember(topic: string, pauseMs: number) {
  const script = `
    import { openNatsStream } from ${JSON.stringify(path.join(ROOT, 'dist/stream/nats/nats-stream.js'))};
    const stream = await openNatsStream({ url: ${JSON.stringify(url)}, topic: ${JSON.stringify(topic)}, partitions: ${PARTITIONS},
      membership: ${JSON.stringify(membership)} });
    const c = await stream.consumer('g');
    const { kv, membership } = c;
    const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
    setInterval(() => say({ assigned: c.assignment().length }), 50);
    // A batch polled before the pause, applied during it and committed after it.
    let before = [];
    while (before.length === 0) before = await c.poll(10, 200);
    process.stdin.once('data', async () => {
      const until = Date.now() + ${pauseMs};
      while (Date.now() < until) {} // blocked: no heartbeat, no timer, no socket read
      const foreign = [];
      const committed = [];
      let after = 0;
      const polled = new Map();
      for (const r of before) polled.set(r.partition, r.offset + 1n);
      await c.commit(polled).catch(() => undefined);
      for (const [p, next] of polled) {
        const lease = await kv.get('g.owner.' + p);
        const pos = await kv.get('g.' + p);
        if (lease?.string() !== membership.member && pos?.operation === 'PUT' && pos.string() === String(next)) committed.push(p + ':' + pos.string());
      }
      const end = Date.now() + 3000;
      while (Date.now() < end) {
        const got = await c.poll(1000, 5);
        after += got.length;
        const last = new Map();
        for (const r of got) last.set(r.partition, r.offset);
        for (const [p, offset] of last) {
          const lease = await kv.get('g.owner.' + p);
          if (lease?.string() === membership.member) continue;
          foreign.push(p + ':' + offset);
        }
      }
      say({ done: true, foreign, committed, after });
      await stream.close();
      process.exit(0);
    });`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  let assigned = -1;
  let report: PausedReport | undefined;
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const lines = out.split('\n');
    out = lines.pop() ?? '';
    for (const line of lines) {
      const m = JSON.parse(line) as { assigned?: number; done?: boolean; foreign?: string[]; committed?: string[]; after?: number };
      if (m.assigned !== undefined) assigned = m.assigned;
      if (m.done) report = { foreign: m.foreign ?? [], committed: m.committed ?? [], after: m.after ?? 0 };
    }
  });
  const exited = new Promise<number | null>((r) => child.once('exit', r));
  return {
    assigned: () => assigned,
    report: () => report,
    pause: () => child.stdin.write('pause\n'),
    exited,
    kill: () => child.kill('SIGKILL'),
  };
}

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

describe('NATS group: a member blocked past the session timeout resumes', () => {
  it('hands out nothing of, and commits nothing for, the partitions the other member took meanwhile', async () => {
    ensureBuilt();
    const topic = `syncline-contract-nats-pause-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url, topic, partitions: PARTITIONS, membership });
    const a = pausedMember(topic, 2500);
    try {
      const producer = await stream.producer();
      await producer.publish(Array.from({ length: 100 * PARTITIONS }, (_, i) => ({ key: `public.t:["${i}"]`, value: Buffer.from(`v${i}`) })));
      await producer.close();
      await until(() => a.assigned() === PARTITIONS, 15_000);
      expect(a.assigned()).toBe(PARTITIONS);
      const b = await stream.consumer('g');
      await until(() => a.assigned() === PARTITIONS / 2 && b.assignment().length === PARTITIONS / 2, 15_000);
      expect(b.assignment()).toHaveLength(PARTITIONS / 2);
      await new Promise((r) => setTimeout(r, 300)); // a's readers fill its buffer
      a.pause();
      let bPolling = true;
      const bGot: { partition: number; offset: bigint }[] = [];
      const bLoop = (async () => {
        while (bPolling) bGot.push(...(await b.poll(1000, 50)));
      })();
      await until(() => a.report() !== undefined, 20_000);
      bPolling = false;
      await bLoop;
      const report = a.report();
      expect(report).toBeDefined();
      expect(report?.after).toBeGreaterThan(0); // it took its share back and read it
      // b (no commits: each lease starts at 0) read every partition it took without a gap,
      // although a's readers pulled from the same durable consumers until a saw its leases gone.
      expect(bGot.length).toBeGreaterThan(0);
      const gaps: string[] = [];
      for (let p = 0; p < PARTITIONS; p++) {
        const offsets = bGot.filter((r) => r.partition === p).map((r) => r.offset);
        for (let i = 1; i < offsets.length; i++) {
          const [prev, cur] = [offsets[i - 1] as bigint, offsets[i] as bigint];
          if (cur > prev + 1n || (cur <= prev && cur !== 0n)) gaps.push(`p${p}: ${prev} then ${cur}`);
        }
      }
      expect(gaps).toEqual([]);
      expect({ foreign: report?.foreign, committed: report?.committed }).toEqual({ foreign: [], committed: [] });
      await b.close();
    } finally {
      a.kill();
      await a.exited;
      await stream.close();
    }
  }, 60_000);
});
