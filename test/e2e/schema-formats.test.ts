/**
 * The typed stream formats end to end: `syncline run` (the built CLI) with `stream.format`
 * avro | json_schema | protobuf on Kafka with a real Confluent-compatible registry (Apicurio,
 * `bash scripts/schema-registry.sh start`), PostgreSQL 15 on both sides, under a workload with
 * an ADD COLUMN mid-stream and a kill -9 in between: the target ends equal to the source, a
 * third-party Confluent client (@kafkajs/confluent-schema-registry) decodes every record of
 * the topic (values and keys), and a record with a schema id the registry does not know is
 * dead-lettered as SCHEMA_UNKNOWN while the rest flows. Then `format: avro` on the embedded
 * stream, schemas in its local file.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import type avro from 'avsc';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTableName } from '../../src/core/sql.js';
import { bigLong } from '../../src/schema/avro-format.js';
import { SchemaChangeCodec } from '../../src/schema/change-codec.js';
import { LocalSchemaStore } from '../../src/schema/local-schema-store.js';
import { SchemaRegistryClient } from '../../src/schema/registry-client.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { waitForEqualTables } from '../helpers/compare-rows.js';
import { freePort, freshDatabase, machinePg15, slotStreaming, uniqueName, waitFor, withClient, type PgServer } from '../helpers/postgres.js';
import { Workload, WORKLOAD_DDL, WORKLOAD_TABLES } from '../helpers/workload.js';

const run = promisify(execFile);
const ROOT_URL = process.env.SCHEMA_REGISTRY_URL ?? 'http://127.0.0.1:8081';
const API = `${ROOT_URL.replace(/\/+$/, '')}/apis/ccompat/v7`;
const BROKER = '127.0.0.1:9092';
const FORMATS = ['avro', 'json_schema', 'protobuf'] as const;
type Format = (typeof FORMATS)[number] | 'embedded_avro';

let server: PgServer;
let dir: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  ensureBuilt();
  try {
    const res = await fetch(`${API}/subjects`, { signal: AbortSignal.timeout(3000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
  } catch (err) {
    throw new Error(`no schema registry answers at ${API}/subjects (${(err as Error).message}): start it with \`bash scripts/schema-registry.sh start\``);
  }
  server = await machinePg15();
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-formats-'));
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  // SYNCLINE_KEEP_TEST_DIR keeps the runs' logs for a post-mortem.
  if (!process.env.SYNCLINE_KEEP_TEST_DIR) await rm(dir, { recursive: true, force: true });
});

for (const format of [...FORMATS, 'embedded_avro'] as Format[]) {
  const embedded = format === 'embedded_avro';
  const base = `syncline_fmt_${format}`;
  const slot = uniqueName(base);
  const topic = `${slot}_topic`;
  describe(`stream.format ${embedded ? 'avro on the embedded stream (local schema file)' : `${format} on Kafka with a schema registry`}`, () => {
    let sourceUrl: string;
    let targetUrl: string;
    let configFile: string;
    let streamDir: string;
    let metricsPort: number;

    beforeAll(async () => {
      sourceUrl = await freshDatabase(server, `${base}_src`);
      targetUrl = await freshDatabase(server, `${base}_dst`);
      for (const url of [sourceUrl, targetUrl]) await withClient(url, (c) => c.query(WORKLOAD_DDL));
      streamDir = path.join(dir, `${format}-stream`);
      configFile = path.join(dir, `${format}.yaml`);
      metricsPort = await freePort();
      await writeFile(
        configFile,
        `source:
  url: ${sourceUrl}
  slots:
    - name: ${slot}
      publication: ${slot}_pub
      tables: [${WORKLOAD_TABLES.map((t) => `'${t}'`).join(', ')}]
stream:
${embedded ? `  broker: embedded\n  path: ${streamDir}\n  format: avro` : `  broker: kafka\n  brokers: ['${BROKER}']\n  topic: ${topic}\n  format: ${format}\n  schema_registry: true\n  schema_registry_url: ${API}`}
  partitions: 3
  batch_size: 500
consumer:
  group_id: ${slot}_g
  batch_size: 300
  # The sink learns of the target's new column when the held table is tried again.
  retry: { backoff_base_ms: 50, backoff_max_ms: 500, held_table_interval_ms: 1000 }
sink:
  url: ${targetUrl}
dead_letter: { store: table }
monitoring:
  port: ${metricsPort}
`,
      );
    });

    function start(n: number): ChildProcess {
      const log = createWriteStream(path.join(dir, `${format}-run-${n}.log`));
      const child = spawn(process.execPath, [CLI, 'run', '-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout?.pipe(log);
      child.stderr?.pipe(log);
      children.push(child);
      return child;
    }

    async function waitStreaming(): Promise<void> {
      await waitFor('the slot to become active', () => withClient(sourceUrl, (c) => slotStreaming(c, slot)), 60_000, 200);
    }

    it('syncs a workload with ADD COLUMN mid-stream across a kill -9; every record decodes; an unknown schema id is dead-lettered', async () => {
      const source = new pg.Client({ connectionString: sourceUrl });
      const target = new pg.Client({ connectionString: targetUrl });
      await source.connect();
      await target.connect();
      try {
        let child = start(0);
        await waitStreaming();
        const workload = new Workload(source);
        while (workload.changes < 1500) await workload.transaction();
        // The new column exists at the target first (schema evolution at the sink is not this test's).
        await target.query('ALTER TABLE items ADD COLUMN extra numeric(10,2)');
        await source.query('ALTER TABLE items ADD COLUMN extra numeric(10,2)');
        await source.query('UPDATE items SET extra = id * 1.25 WHERE id % 3 = 0');
        while (workload.changes < 2500) await workload.transaction();
        // The first process confirmed the items DDL before it dies (else the next one meets that DDL again and counts it).
        const pastDdl = (await source.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]?.l;
        await waitFor(
          'the first process to confirm past the DDL',
          async () => (await source.query<{ ok: boolean }>('SELECT confirmed_flush_lsn >= $1::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $2', [pastDdl, slot])).rows[0]?.ok === true,
          60_000,
          100,
        );
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
        for (let i = 0; i < 50; i++) await workload.transaction();
        child = start(1);
        while (workload.changes < 3000) await workload.transaction();
        // A second DDL, met by this process: counted by sync_schema_changes_total.
        await target.query('ALTER TABLE "Mixed Case" ADD COLUMN tag text');
        await source.query('ALTER TABLE "Mixed Case" ADD COLUMN tag text');
        await source.query(`UPDATE "Mixed Case" SET tag = 't' || "Key" WHERE "Key" LIKE 'k1%'`);
        while (workload.changes < 4000) await workload.transaction();
        await source.query('UPDATE items SET extra = -id WHERE id % 5 = 0');
        await waitForEqualTables(source, target, WORKLOAD_TABLES);

        const { rows: versions } = await source.query<{ version: number }>(
          `SELECT version FROM syncline.schema_versions WHERE slot_name = $1 AND table_name = 'items' ORDER BY version`,
          [slot],
        );
        expect(versions.map((v) => v.version)).toEqual([1, 2]);
        // `syncline schemas` shows the ADD COLUMN as the diff of version 2, at a real LSN; `status` the newest version.
        const listed = JSON.parse((await run(process.execPath, [CLI, 'schemas', '-c', configFile, '--table', 'items', '--json'])).stdout) as {
          version: number;
          firstLsn: string;
          diff: { added: { name: string; type: string; attnum: number }[]; dropped: unknown[] } | null;
        }[];
        expect(listed.map((v) => v.version)).toEqual([1, 2]);
        expect(listed[1]?.diff?.added.map((c) => [c.name, c.type])).toEqual([['extra', 'numeric(10,2)']]);
        expect(listed[1]?.diff?.dropped).toEqual([]);
        expect(listed[1]?.firstLsn).not.toBe('0/0');
        const status = await run(process.execPath, [CLI, 'status', '-c', configFile]).catch((err: { stdout: string }) => err);
        expect(status.stdout).toMatch(/schema {4}public\.items: _schema_version 2 since LSN [0-9A-F]+\/[0-9A-F]+/);

        if (!embedded) {
          await expectThirdPartyDecodesTopic(format as (typeof FORMATS)[number], topic);
          // A record whose schema id the registry does not know: dead-lettered, the rest flows.
          await injectUnknownSchemaRecord(topic);
          await source.query(`INSERT INTO items (id, grp, extra) VALUES (-1, 1, 1.5)`);
          await waitForEqualTables(source, target, WORKLOAD_TABLES);
          const { stdout } = await run(process.execPath, [CLI, 'dlq', 'list', '-c', configFile, '--json']);
          const letters = JSON.parse(stdout) as { error_code: string }[];
          expect(letters.map((l) => l.error_code)).toEqual(['SCHEMA_UNKNOWN']);
          // Replay decodes it again: its schema is still unknown, so it stays.
          const replayed = JSON.parse((await run(process.execPath, [CLI, 'dlq', 'replay', '-c', configFile, '--json'])).stdout) as { undecodable: string[]; replayed: number };
          expect(replayed).toMatchObject({ replayed: 0, undecodable: [expect.any(String)] });
        } else {
          // The local schema file decodes every record of the log.
          const codec = new SchemaChangeCodec({ format: 'avro', store: new LocalSchemaStore(path.join(streamDir, 'schemas.jsonl')), topic: 'db-changes', subjectStrategy: 'topic_record' });
          const { openEmbeddedStream } = await import('../../src/stream/embedded/embedded-stream.js');
          const stream = await openEmbeddedStream({ path: streamDir, partitions: 3, retentionHours: 24 });
          const ends = await stream.endOffsets();
          const total = [...ends.values()].reduce((a, b) => a + b, 0n);
          const consumer = await stream.consumer(`${slot}_check`);
          let read = 0;
          try {
            while (BigInt(read) < total) {
              const records = await consumer.poll(1000, 500);
              for (const r of records) {
                expect(r.value[0]).toBe(0);
                const change = await codec.decode(r.value);
                expect(WORKLOAD_TABLES.map((t) => parseTableName(t).table)).toContain(change.table);
                read++;
              }
            }
          } finally {
            await consumer.close();
            await stream.close();
          }
          expect(read).toBeGreaterThan(3000);
        }
        const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
        expect(metrics).toContain('sync_schema_changes_total{table="public.Mixed Case"} 1');
        expect(metrics).not.toContain('sync_schema_changes_total{table="public.items"}');
        const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
        child.kill('SIGTERM');
        expect(await exited).toBe(0);
      } finally {
        await source.end();
        await target.end();
      }
    }, 300_000);
  });
}

/** Every record of `topic`, decoded by the third-party client: the same change as syncline reads. */
async function expectThirdPartyDecodesTopic(format: (typeof FORMATS)[number], topic: string): Promise<void> {
  const registry = new SchemaRegistry({ host: API }, {
    [SchemaType.AVRO]: { typeHook: (s: avro.Schema) => (s === 'long' || (typeof s === 'object' && (s as { type?: string }).type === 'long') ? bigLong : undefined) },
  } as never);
  const ours = new SchemaChangeCodec({ format, store: new SchemaRegistryClient({ url: API }), topic, subjectStrategy: 'topic_record' });
  const kafka = new Kafka({ brokers: [BROKER], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const total = offsets.reduce((n, o) => n + Number(o.high), 0);
  expect(total).toBeGreaterThan(3000);
  const field = (o: Record<string, unknown>, name: string): unknown => (format === 'protobuf' ? o[protobuf.util.camelCase(name)] : o[name]);
  const consumer = kafka.consumer({ groupId: `${topic}_third_party` });
  await consumer.connect();
  let decoded = 0;
  const failures: string[] = [];
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        try {
          const value = message.value as Buffer;
          const theirs = (await registry.decode(value)) as Record<string, unknown>;
          const change = await ours.decode(value);
          if (field(theirs, 'commit_lsn') !== change.commit_lsn || field(theirs, 'op') !== change.op) throw new Error(`differs: ${JSON.stringify(change)}`);
          if (message.key && message.key.length > 0 && Object.keys(change.key).length > 0) {
            const key = (await registry.decode(message.key)) as Record<string, unknown>;
            if (key === null || typeof key !== 'object') throw new Error('key did not decode');
          }
        } catch (err) {
          failures.push((err as Error).message);
        }
        decoded++;
      },
    });
    await waitFor('the third-party client to read the whole topic', () => decoded >= total, 120_000, 200);
  } finally {
    await consumer.disconnect();
  }
  expect(failures.slice(0, 5)).toEqual([]);
  expect(decoded).toBe(total);
}

async function injectUnknownSchemaRecord(topic: string): Promise<void> {
  const kafka = new Kafka({ brokers: [BROKER], logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  try {
    const value = Buffer.concat([Buffer.from([0]), Buffer.from([0x7f, 0xff, 0xff, 0x01]), Buffer.from('not a schema I know')]);
    await producer.send({ topic, acks: -1, messages: [{ key: 'bogus', value, partition: 0 }] });
  } finally {
    await producer.disconnect();
  }
}
