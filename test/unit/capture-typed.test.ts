/**
 * Capture with a typed stream format, driven directly (no server): each change is encoded
 * with the definition of its own `_schema_version` (an ADD COLUMN mid-stream included),
 * batches reach the producer in order even when one encodes slowly, and a schema the
 * registry refuses stops capture without publishing or confirming anything after it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { SynclineError } from '../../src/core/errors.js';
import { Events } from '../../src/core/events.js';
import { silentLogger } from '../../src/log/logger.js';
import type { PgoutputMessage } from '../../src/pgoutput/messages.js';
import { Capture } from '../../src/pipeline/capture.js';
import { SchemaChangeCodec, type ChangeCodec } from '../../src/schema/change-codec.js';
import { LocalSchemaStore } from '../../src/schema/local-schema-store.js';
import type { TableDefinition } from '../../src/schema/table-definition.js';
import type { OutgoingRecord } from '../../src/stream/stream.js';
import { waitFor } from '../helpers/wait.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-capture-typed-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function capture(codec: ChangeCodec): { records: OutgoingRecord[]; feed: (m: PgoutputMessage, lsn: bigint) => void; flush: () => void; c: Capture; failure: () => Error | undefined } {
  const records: OutgoingRecord[] = [];
  const producer = { publish: async (recs: readonly OutgoingRecord[]) => void records.push(...recs), close: async () => undefined };
  const source = { start: () => new Promise<void>(() => undefined), acknowledge: () => undefined, pause: () => undefined, resume: () => undefined, close: async () => undefined };
  const c = new Capture(source, producer, new Events(), silentLogger(), {
    source: 's', startLsn: 0n, batchSize: 1000, batchWaitMs: 5, maxInFlight: 4, statusIntervalMs: 60_000, ignoredSchemas: [], spillDir: dir, codec,
  });
  const internals = c as unknown as { publisher: { flush(): void }; failure: Error | undefined };
  return { records, feed: (m, lsn) => c.handleMessage(m, lsn), flush: () => internals.publisher.flush(), c, failure: () => internals.failure };
}

const id = { isKey: true, name: 'id', typeOid: 23, typeMod: -1 };
const relation = (extra: boolean): PgoutputMessage =>
  ({
    tag: 'relation', xid: undefined, relationId: 1, schema: 'public', name: 't', replicaIdentity: 'd',
    columns: [id, { isKey: false, name: 'v', typeOid: 25, typeMod: -1 }, ...(extra ? [{ isKey: false, name: 'amount', typeOid: 1700, typeMod: ((10 << 16) | 2) + 4 }] : [])],
  }) as unknown as PgoutputMessage;
const insert = (...tuple: string[]): PgoutputMessage => ({ tag: 'insert', xid: undefined, relationId: 1, newTuple: tuple }) as unknown as PgoutputMessage;
const begin = (finalLsn: bigint, xid: number): PgoutputMessage => ({ tag: 'begin', finalLsn, commitTime: 0n, xid });
const commit = (lsn: bigint): PgoutputMessage => ({ tag: 'commit', flags: 0, commitLsn: lsn, endLsn: lsn + 1n, commitTime: 0n });

/** Two transactions, the second after an ADD COLUMN (a new Relation message, sent at 0/0 as pgoutput does). */
function feedWorkload(feed: (m: PgoutputMessage, lsn: bigint) => void, flush: () => void): void {
  feed(begin(100n, 1), 90n);
  feed(relation(false), 0n);
  feed(insert('1', 'a'), 91n);
  feed(commit(100n), 100n);
  flush();
  feed(begin(200n, 2), 150n);
  feed(relation(true), 0n);
  feed(insert('2', 'b', '12.50'), 151n);
  feed(commit(200n), 200n);
  feed(begin(300n, 3), 250n);
  flush();
}

describe('capture with a typed stream format', () => {
  it('encodes each change with its own version (ADD COLUMN mid-stream), keys schema-encoded, partitions as with json', async () => {
    const codec = new SchemaChangeCodec({ format: 'avro', store: new LocalSchemaStore(path.join(dir, 'a.jsonl')), topic: 't', subjectStrategy: 'topic_record' });
    const { records, feed, flush, c } = capture(codec);
    feedWorkload(feed, flush);
    await waitFor('both transactions confirmed', () => c.confirmedLsn === 201n, 5000, 1);
    expect(records).toHaveLength(2);
    const changes: ChangeEvent[] = [];
    for (const r of records) {
      expect(r.value[0]).toBe(0);
      expect(r.keyBytes?.[0]).toBe(0);
      changes.push(await codec.decode(r.value));
    }
    expect(changes.map((e) => [e._schema_version, e.payload])).toEqual([
      [1, { id: '1', v: 'a' }],
      [2, { id: '2', v: 'b', amount: '12.50' }],
    ]);
    expect(records.map((r) => r.key)).toEqual(['public.t:["1"]', 'public.t:["2"]']);
  });

  it('hands batches to the producer in order when an earlier one encodes slowly', async () => {
    const inner = new SchemaChangeCodec({ format: 'avro', store: new LocalSchemaStore(path.join(dir, 'b.jsonl')), topic: 't', subjectStrategy: 'topic_record' });
    let first = true;
    const slow: ChangeCodec = {
      format: 'avro',
      decode: (v) => inner.decode(v),
      encode: async (e: ChangeEvent, d: TableDefinition) => {
        if (first) {
          first = false;
          await new Promise((r) => setTimeout(r, 50));
        }
        return inner.encode(e, d);
      },
    };
    const { records, feed, flush, c } = capture(slow);
    feedWorkload(feed, flush);
    await waitFor('both transactions confirmed', () => c.confirmedLsn === 201n, 5000, 1);
    expect(records.map((r) => r.key)).toEqual(['public.t:["1"]', 'public.t:["2"]']);
  });

  it('stops on a refused schema: nothing after it is published or confirmed', async () => {
    const inner = new SchemaChangeCodec({ format: 'avro', store: new LocalSchemaStore(path.join(dir, 'c.jsonl')), topic: 't', subjectStrategy: 'topic_record' });
    const refusing: ChangeCodec = {
      format: 'avro',
      decode: (v) => inner.decode(v),
      encode: (e, d) =>
        d.schemaVersion === 2 ? Promise.reject(new SynclineError('SCHEMA_INCOMPATIBLE', 'refused', { retriable: false })) : inner.encode(e, d),
    };
    const { records, feed, flush, c, failure } = capture(refusing);
    feedWorkload(feed, flush);
    await waitFor('capture to fail', () => failure() !== undefined, 5000, 1);
    expect(failure()).toMatchObject({ code: 'SCHEMA_INCOMPATIBLE' });
    feed(insert('3', 'c', '1.00'), 251n);
    feed(commit(300n), 300n);
    flush();
    await new Promise((r) => setTimeout(r, 30));
    expect(records.map((r) => r.key)).toEqual(['public.t:["1"]']);
    expect(c.confirmedLsn).toBe(101n);
  });
});
