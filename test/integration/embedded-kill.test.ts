/**
 * kill -9 of a writer process, repeatedly, mid-publish: every acknowledged record survives
 * exactly once and in order per key; nothing torn is ever returned, neither to a consumer
 * reading while the writer runs nor after recovery.
 *
 * The child imports the compiled module from dist/ (the suite runs after `npm run build`).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { partitionFor } from '../../src/core/change.js';
import { openEmbeddedStream } from '../../src/stream/embedded/embedded-stream.js';
import type { Stream, StreamConsumer, StreamRecord } from '../../src/stream/stream.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DIST_MODULE = join(ROOT, 'dist/stream/embedded/embedded-stream.js');
const PARTITIONS = 3;
const KEYS = 7;
const WINDOW = 4; // publishes in flight in the child
const MAX_BATCH = 5; // records per publish in the child
const RUNS = 6;

// Publishes numbered records with WINDOW publishes in flight and prints each acknowledged
// number once its publish resolved (publishes resolve in call order).
const CHILD = `
import { pathToFileURL } from 'node:url';
const { openEmbeddedStream } = await import(pathToFileURL(process.env.SYNCLINE_MODULE).href);
const [path, runArg, startArg] = process.argv.slice(2);
const run = Number(runArg);
let n = Number(startArg);
const stream = await openEmbeddedStream({ path, partitions: ${PARTITIONS}, segmentBytes: 16 * 1024 });
const producer = await stream.producer();
const inflight = [];
for (;;) {
  const size = 1 + (n % ${MAX_BATCH});
  const batch = [];
  for (let i = 0; i < size; i++, n++) {
    batch.push({ key: 'k' + (n % ${KEYS}), value: Buffer.from(JSON.stringify({ run, n, pad: 'x'.repeat(n % 200) })) });
  }
  const last = n - 1;
  inflight.push(producer.publish(batch).then(() => last));
  if (inflight.length >= ${WINDOW}) process.stdout.write('ack ' + (await inflight.shift()) + '\\n');
}
`;

interface Run {
  run: number;
  start: number;
  lastAck: number;
}

interface Payload {
  run: number;
  n: number;
  pad: string;
}

let dir: string;
let opened: Stream[];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'syncline-embedded-kill-'));
  opened = [];
});

afterEach(async () => {
  await Promise.allSettled(opened.map((s) => s.close()));
  await rm(dir, { recursive: true, force: true });
});

function assertFreshBuild(): void {
  if (!existsSync(DIST_MODULE)) throw new Error(`${DIST_MODULE} is missing: run \`npm run build\` first`);
  const built = statSync(DIST_MODULE).mtimeMs;
  for (const folder of ['src/stream/embedded', 'src/stream/common']) {
    for (const name of readdirSync(join(ROOT, folder)).filter((n) => n.endsWith('.ts'))) {
      const src = join(ROOT, folder, name);
      if (statSync(src).mtimeMs > built) throw new Error(`${DIST_MODULE} is older than ${src}: run \`npm run build\``);
    }
  }
}

/** Runs one child until it acknowledged at least `target` more records, then kills it with SIGKILL. */
async function runAndKill(script: string, path: string, run: number, start: number, target: number): Promise<Run> {
  const child = spawn(process.execPath, [script, path, String(run), String(start)], {
    env: { ...process.env, SYNCLINE_MODULE: DIST_MODULE },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let lastAck = start - 1;
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = once(child, 'exit');
  const reached = new Promise<void>((resolve) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^ack (\d+)$/.exec(line);
      if (m === null) return;
      const acked = Number(m[1]);
      expect(acked).toBeGreaterThan(lastAck);
      lastAck = acked;
      if (lastAck - start + 1 >= target) resolve();
    });
  });
  const outcome = await Promise.race([reached.then(() => 'reached' as const), exited.then(() => 'exited' as const)]);
  if (outcome === 'exited') throw new Error(`writer child exited on its own:\n${stderr}`);
  // Land the kill at a varying point of the write/fsync cycle.
  await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 20)));
  child.kill('SIGKILL');
  const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
  expect(signal ?? code).toBe('SIGKILL');
  // Acks printed before the kill may still be in the pipe.
  await new Promise((r) => setImmediate(r));
  return { run, start, lastAck };
}

async function readAll(consumer: StreamConsumer, stream: Stream): Promise<StreamRecord[]> {
  let total = 0n;
  for (const end of (await stream.endOffsets()).values()) total += end;
  const out: StreamRecord[] = [];
  const deadline = Date.now() + 20_000;
  while (BigInt(out.length) < total && Date.now() < deadline) out.push(...(await consumer.poll(5000, 50)));
  expect(BigInt(out.length)).toBe(total);
  expect(await consumer.poll(100, 100)).toEqual([]);
  return out;
}

function byPartition(records: readonly StreamRecord[]): Map<number, StreamRecord[]> {
  const map = new Map<number, StreamRecord[]>();
  for (const r of records) {
    const list = map.get(r.partition) ?? [];
    list.push(r);
    map.set(r.partition, list);
  }
  return map;
}

function parse(r: StreamRecord): Payload {
  const p = JSON.parse(r.value.toString()) as Payload;
  expect(r.key).toBe(`k${p.n % KEYS}`);
  expect(p.pad).toBe('x'.repeat(p.n % 200));
  expect(r.partition).toBe(partitionFor(r.key, PARTITIONS));
  return p;
}

describe('embedded stream under kill -9', () => {
  it('keeps every acknowledged record exactly once, in order per key, and never returns a torn one', async () => {
    assertFreshBuild();
    const script = join(dir, 'writer-child.mjs');
    await writeFile(script, CHILD);
    const path = join(dir, 'stream');

    // A consumer in this process reads while the children write: it must never see a torn
    // record, and what it sees must stay in the log after every recovery.
    const live = await openEmbeddedStream({ path, partitions: PARTITIONS, shareNotifications: false, pollIntervalMs: 5 });
    opened.push(live);
    const liveConsumer = await live.consumer('live');
    const liveRecords: StreamRecord[] = [];
    let stopLive = false;
    const liveLoop = (async () => {
      while (!stopLive) liveRecords.push(...(await liveConsumer.poll(1000, 20)));
    })();

    const runs: Run[] = [];
    let next = 0;
    try {
      for (let run = 0; run < RUNS; run++) {
        const r = await runAndKill(script, path, run, next, 50 + Math.floor(Math.random() * 400));
        runs.push(r);
        next = r.lastAck + 1;
      }
    } finally {
      stopLive = true;
      await liveLoop;
    }
    expect(liveRecords.length).toBeGreaterThan(0);

    // Read everything as the last kill left it (torn tail not yet truncated) ...
    const before = await openEmbeddedStream({ path, partitions: PARTITIONS });
    opened.push(before);
    const unrecovered = await readAll(await before.consumer('verify-1'), before);
    // ... then let a writer recover, and read again: recovery removes only unreadable bytes.
    const producer = await before.producer();
    await producer.close();
    const recovered = await readAll(await before.consumer('verify-2'), before);
    expect(recovered.map((r) => [r.partition, r.offset, r.value.toString()])).toEqual(
      unrecovered.map((r) => [r.partition, r.offset, r.value.toString()]),
    );

    const seen = new Map<string, number>();
    for (const [, records] of byPartition(recovered)) {
      let prev: Payload | null = null;
      for (let i = 0; i < records.length; i++) {
        const r = records[i] as StreamRecord;
        expect(r.offset).toBe(BigInt(i));
        const p = parse(r);
        // Publish order within a partition: runs in sequence, numbers rising within a run.
        if (prev !== null) expect(p.run > prev.run || (p.run === prev.run && p.n > prev.n)).toBe(true);
        prev = p;
        const id = `${p.run}:${p.n}`;
        seen.set(id, (seen.get(id) ?? 0) + 1);
      }
    }
    for (const { run, start, lastAck } of runs) {
      // Every acknowledged record exactly once.
      for (let n = start; n <= lastAck; n++) expect(seen.get(`${run}:${n}`), `run ${run} record ${n}`).toBe(1);
    }
    for (const [id, count] of seen) {
      expect(count, id).toBe(1);
      const [run, n] = id.split(':').map(Number) as [number, number];
      const r = runs[run] as Run;
      expect(n).toBeGreaterThanOrEqual(r.start);
      // Beyond the last printed ack only the publishes that were in flight can be present.
      expect(n).toBeLessThanOrEqual(r.lastAck + WINDOW * MAX_BATCH);
    }

    // What the live consumer saw is a prefix of each partition's final content.
    const final = byPartition(recovered);
    for (const [partition, records] of byPartition(liveRecords)) {
      const finalRecords = final.get(partition) ?? [];
      for (let i = 0; i < records.length; i++) {
        const r = records[i] as StreamRecord;
        parse(r);
        expect(r.offset).toBe(BigInt(i));
        expect(r.value.equals((finalRecords[i] as StreamRecord).value)).toBe(true);
      }
    }
  }, 120_000);
});
