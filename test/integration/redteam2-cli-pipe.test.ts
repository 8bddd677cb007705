/**
 * Red team 2: `syncline dlq list -c sync.yaml | head` crashed with an unhandled EPIPE (a
 * Node stack trace on stderr, "Emitted 'error' event on Socket") once `head` had its lines
 * and closed the pipe. A reader that closes the pipe early now just ends the output: the
 * command finishes with its own exit code and prints no stack.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresDeadLetterQueue } from '../../src/dlq/postgres-dead-letter-queue.js';
import { ChangeFactory } from '../../src/testing/sink-contract.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { freshDatabase, machinePg15 } from '../helpers/postgres.js';

describe('red team 2: CLI output into a pipe closed early', () => {
  let dir: string;
  let config: string;
  beforeAll(async () => {
    ensureBuilt();
    const url = await freshDatabase(await machinePg15(), 'rt2_pipe');
    const dlq = new PostgresDeadLetterQueue(url, 'syncline', 'rt2_pipe_slot');
    await dlq.prepare();
    const f = new ChangeFactory('public', 'rt2_pipe_slot');
    await dlq.add(Array.from({ length: 3000 }, (_, i) => ({ change: f.insert('t', String(i), i + 1, 'x'.repeat(50)), error: 'refused '.repeat(10), errorCode: 'SINK_23514', attempts: 1, partition: 0, offset: BigInt(i) })));
    await dlq.close();
    dir = await mkdtemp(path.join(os.tmpdir(), 'rt2-pipe-'));
    config = path.join(dir, 'sync.yaml');
    await writeFile(config, `source:\n  url: ${url}\n  slots: [{ name: rt2_pipe_slot, publication: rt2_pipe_pub, tables: [t] }]\nstream: { path: ${path.join(dir, 'stream')} }\nsink: { url: ${url} }\n`);
  }, 60_000);
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('dlq list | head: no unhandled EPIPE', async () => {
    const child = spawn(process.execPath, [CLI, 'dlq', 'list', '-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Like head: read the first chunk, then close the pipe.
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.stdout.destroy();
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(stderr).not.toMatch(/EPIPE|Unhandled|node:events/);
    expect(code).toBe(0);
  }, 60_000);
});
