import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { parseTableName } from '../../src/core/sql.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { compareTable } from '../../src/verify/compare.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, waitFor, uniqueName } from '../helpers/postgres.js';
import { requireListening } from '../contract/broker-check.js';

const run = promisify(execFile);
const ACCOUNTS = 100;
const TOTAL = ACCOUNTS * 1000;

/**
 * sink.consistency: transactional. Transfers move money between accounts in multi-row
 * transactions (some also replace an account row: INSERT + DELETE), so the sum of balances
 * is the same after every source transaction. A reader polls the target throughout: it must
 * never see a sum other than the total, which it would with changes applied per row.
 * Small capture and apply batches and 4 partitions cut every transaction across batches.
 */
for (const broker of ['embedded', 'kafka', 'nats'] as const) describeTransactional(broker);

function describeTransactional(broker: 'embedded' | 'kafka' | 'nats'): void {
const name = broker === 'embedded' ? 'syncline_txn' : `syncline_txn_${broker}`;
const slot = uniqueName(name);
describe(`transaction-consistent apply (${broker} stream)`, () => {
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;
  let checker: pg.Client;

  beforeAll(async () => {
    ensureBuilt();
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-txn-'));
    if (broker === 'kafka') await requireListening('127.0.0.1', 9092, 'start the broker: bash scripts/kafka.sh start');
    if (broker === 'nats') await requireListening('127.0.0.1', 4222, 'start NATS with JetStream: nats-server -js -a 127.0.0.1 -p 4222');
    const pair = await sourceAndTarget(server, name);
    ({ source, target } = pair);
    checker = new pg.Client({ connectionString: pair.targetUrl });
    await checker.connect();
    await source.query('CREATE TABLE accounts (id integer PRIMARY KEY, balance bigint NOT NULL)');
    await source.query(`INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, ${ACCOUNTS}) g`);
    // The target refuses a balance of exactly 13: the transaction holding it is poison.
    await target.query('CREATE TABLE accounts (id integer PRIMARY KEY, balance bigint NOT NULL CONSTRAINT not_thirteen CHECK (balance <> 13))');
    configFile = path.join(dir, 'sync.yaml');
    const topic = `${name}_${process.pid}_${Date.now()}`;
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${name}_pub, tables: [accounts] }]
stream: ${streamOf(broker, dir, topic)}
consumer: { group_id: ${slot}, batch_size: 5, batch_wait_ms: 1, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } }
sink: { url: ${pair.targetUrl}, consistency: transactional }
dead_letter: { topic: ${topic}.dlq }
monitoring: { enabled: false }
`,
    );
  }, 60_000);

  afterAll(async () => {
    await source?.end();
    await target?.end();
    await checker?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('never shows part of a source transaction; a poison transaction is dead-lettered whole and replays after the fix', async () => {
    let checking = true;
    let checking$: Promise<void> = Promise.resolve();
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, new Metrics());
    running.catch(() => undefined);
    try {
      await waitFor('slot streaming', () => slotStreaming(source, slot));
      await waitFor('the initial snapshot applied', async () => (await target.query('SELECT count(*)::int AS n FROM accounts')).rows[0]?.n === ACCOUNTS, 60_000);

      const sums: string[] = [];
      checking$ = (async () => {
        while (checking) {
          const { rows } = await checker.query<{ s: string }>('SELECT coalesce(sum(balance), 0)::text AS s FROM accounts');
          sums.push(rows[0]?.s ?? 'none');
        }
      })();

      let nextId = ACCOUNTS + 1;
      const ids = async (): Promise<number[]> => (await source.query<{ id: number }>('SELECT id FROM accounts ORDER BY id')).rows.map((r) => r.id);
      let live = await ids();
      const pick = (): number => live[Math.floor(Math.random() * live.length)] as number;
      for (let t = 0; t < 300; t++) {
        await source.query('BEGIN');
        if (t % 10 === 9) {
          // Replace an account row: its balance moves to a new row, the old row goes.
          const from = pick();
          await source.query('INSERT INTO accounts SELECT $1, balance FROM accounts WHERE id = $2', [nextId, from]);
          await source.query('DELETE FROM accounts WHERE id = $1', [from]);
          live = live.filter((id) => id !== from).concat(nextId++);
        } else {
          const legs = 2 + (t % 4);
          for (let l = 0; l < legs; l++) {
            const [a, b] = [pick(), pick()];
            await source.query('UPDATE accounts SET balance = balance - 7 WHERE id = $1', [a]);
            await source.query('UPDATE accounts SET balance = balance + 7 WHERE id = $1', [b]);
          }
        }
        await source.query('COMMIT');
      }
      const queue = async (): Promise<number> => {
        const { stdout } = await run(process.execPath, [CLI, 'dlq', 'list', '--json', '-c', configFile]);
        return (JSON.parse(stdout) as unknown[]).length;
      };
      // The poison transaction: account A ends at 13 (refused by the target), B gets the rest.
      const [a, b] = live.slice(0, 2) as [number, number];
      await source.query('BEGIN');
      await source.query('UPDATE accounts SET balance = balance + (SELECT balance - 13 FROM accounts WHERE id = $1) WHERE id = $2', [a, b]);
      await source.query('UPDATE accounts SET balance = 13 WHERE id = $1', [a]);
      await source.query('COMMIT');
      // (Applied in one sink transaction with a later change to A, the 13 would be folded away.)
      await waitFor('the poison transaction dead-lettered whole (2 changes)', async () => (await queue()) === 2, 60_000, 500);
      // A later transaction touching A and another account follows it to the queue whole.
      const c = live[2] as number;
      await source.query('BEGIN');
      await source.query('UPDATE accounts SET balance = balance + 1 WHERE id = $1', [a]);
      await source.query('UPDATE accounts SET balance = balance - 1 WHERE id = $1', [c]);
      await source.query('COMMIT');
      await source.query('UPDATE accounts SET balance = balance WHERE id = $1', [live[3]]); // a last, unrelated transaction

      await waitFor('both transactions of A dead-lettered (4 changes)', async () => (await queue()) === 4, 60_000, 500);
      checking = false;
      await checking$;

      expect(sums.length).toBeGreaterThan(50);
      expect([...new Set(sums)]).toEqual([String(TOTAL)]);
      // Everything else arrived: only the rows of A, B and C differ.
      const diff = await compareTable(source, target, parseTableName('accounts'));
      expect(diff.differing).toBeLessThanOrEqual(3);

      await target.query('ALTER TABLE accounts DROP CONSTRAINT not_thirteen');
      const replay = await run(process.execPath, [CLI, 'dlq', 'replay', '--json', '-c', configFile]);
      expect(JSON.parse(replay.stdout)).toMatchObject({ replayed: 4, failed: [] });
      await waitFor('target equals source', async () => (await compareTable(source, target, parseTableName('accounts'))).differing === 0, 30_000);
      expect((await target.query<{ s: string }>('SELECT sum(balance)::text AS s FROM accounts')).rows[0]?.s).toBe(String(TOTAL));
    } finally {
      checking = false;
      await checking$.catch(() => undefined);
      ctl.abort();
      await running;
    }
  }, 240_000);
});
}

function streamOf(broker: 'embedded' | 'kafka' | 'nats', dir: string, topic: string): string {
  switch (broker) {
    case 'embedded':
      return `{ path: ${path.join(dir, 'stream')}, partitions: 4, batch_size: 7 }`;
    case 'kafka':
      return `{ broker: kafka, brokers: ['127.0.0.1:9092'], topic: ${topic}, partitions: 4, batch_size: 7 }`;
    case 'nats':
      return `{ broker: nats, url: 'nats://127.0.0.1:4222', topic: ${topic}, partitions: 4, batch_size: 7 }`;
  }
}
