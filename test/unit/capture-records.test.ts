import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { Events } from '../../src/core/events.js';
import { silentLogger } from '../../src/log/logger.js';
import type { PgoutputMessage } from '../../src/pgoutput/messages.js';
import { Capture } from '../../src/pipeline/capture.js';
import type { OutgoingRecord } from '../../src/stream/stream.js';
import { waitFor } from '../helpers/wait.js';

const spill = mkdtempSync(path.join(os.tmpdir(), 'syncline-records-'));
afterAll(() => rmSync(spill, { recursive: true, force: true }));

const relation = (id: number, name: string): PgoutputMessage =>
  ({
    tag: 'relation', xid: undefined, relationId: id, schema: 'public', name, replicaIdentity: 'd',
    columns: [{ isKey: true, name: 'id', typeOid: 23, typeMod: -1 }, { isKey: false, name: 'note', typeOid: 25, typeMod: -1 }],
  }) as unknown as PgoutputMessage;
const insert = (rel: number, id: string, note: string | null): PgoutputMessage => ({ tag: 'insert', xid: undefined, relationId: rel, newTuple: [id, note] }) as unknown as PgoutputMessage;

describe('capture: the records it publishes', () => {
  it('carry each change as JSON, keyed by its partition key, with its id (source:commit_lsn:seq) readable by every broker', async () => {
    // What the producer is handed, copied member by member as a broker adapter reads it.
    const records: { key: string; id: string | undefined; value: string }[] = [];
    const producer = {
      publish: async (recs: readonly OutgoingRecord[]) => void records.push(...recs.map((r) => ({ key: r.key, id: r.id, value: r.value.toString('utf8') }))),
      close: async () => undefined,
    };
    const source = { start: () => new Promise<void>(() => undefined), acknowledge: () => undefined, pause: () => undefined, resume: () => undefined, close: async () => undefined };
    const c = new Capture(source, producer, new Events(), silentLogger(), {
      source: 'src', startLsn: 0n, batchSize: 1000, batchWaitMs: 1, maxInFlight: 4, statusIntervalMs: 60_000, ignoredSchemas: [], spillDir: spill,
    });
    c.handleMessage(relation(1, 'a'), 1n);
    c.handleMessage(relation(2, 'b"q'), 1n);
    // Two transactions, two tables, odd values: what the JSON writer keeps between changes changes too.
    c.handleMessage({ tag: 'begin', finalLsn: 0x1_0000_0100n, commitTime: 0n, xid: 7 }, 0x1_0000_0010n);
    c.handleMessage(insert(1, '1', 'plain'), 0x1_0000_0020n);
    c.handleMessage(insert(2, '2', 'é "quoted"'), 0x1_0000_0030n);
    c.handleMessage(insert(1, '3', null), 0xffff_fff0n);
    c.handleMessage({ tag: 'commit', flags: 0, commitLsn: 0x1_0000_0100n, endLsn: 0x1_0000_0108n, commitTime: 0n }, 0x1_0000_0100n);
    c.handleMessage({ tag: 'begin', finalLsn: 0x2_0000_0000n, commitTime: 1_000_000n, xid: 8 }, 0x1_ffff_0000n);
    c.handleMessage(insert(2, '4', 'x'.repeat(100)), 0x1_ffff_0010n);
    c.handleMessage({ tag: 'commit', flags: 0, commitLsn: 0x2_0000_0000n, endLsn: 0x2_0000_0008n, commitTime: 1_000_000n }, 0x2_0000_0000n);
    c.handleMessage({ tag: 'begin', finalLsn: 0x3_0000_0000n, commitTime: 2_000_000n, xid: 9 }, 0x2_ffff_0000n);
    await waitFor('the records', async () => records.length === 4, 5000, 5);
    const events = records.map((r) => JSON.parse(r.value) as ChangeEvent);
    expect(events.map((e) => [e.table, e.key.id, e.payload?.note, e.lsn, e.commit_lsn, e.seq])).toEqual([
      ['a', '1', 'plain', '1/20', '1/100', 1],
      ['b"q', '2', 'é "quoted"', '1/30', '1/100', 2],
      ['a', '3', null, '0/FFFFFFF0', '1/100', 3],
      ['b"q', '4', 'x'.repeat(100), '1/FFFF0010', '2/0', 1],
    ]);
    for (const [i, r] of records.entries()) {
      const e = events[i] as ChangeEvent;
      expect(r.key).toBe(partitionKeyOf(e));
      expect(r.key).toBe(`public.${e.table}:${JSON.stringify([e.key.id])}`);
      expect(r.id).toBe(`src:${e.commit_lsn}:${e.seq}`);
      // The bytes are JSON.stringify's, member order included.
      expect(r.value).toBe(JSON.stringify(e));
    }
  });

  it('changes whose unchanged values are read from the source go out with them (or still unchanged), each in its place', async () => {
    const records: ChangeEvent[] = [];
    const producer = {
      publish: async (recs: readonly OutgoingRecord[]) => void records.push(...recs.map((r) => JSON.parse(r.value.toString('utf8')) as ChangeEvent)),
      close: async () => undefined,
    };
    const source = { start: () => new Promise<void>(() => undefined), acknowledge: () => undefined, pause: () => undefined, resume: () => undefined, close: async () => undefined };
    let reads = 0;
    const c = new Capture(source, producer, new Events(), silentLogger(), {
      source: 'src', startLsn: 0n, batchSize: 1000, batchWaitMs: 1, maxInFlight: 4, statusIntervalMs: 60_000, ignoredSchemas: [], spillDir: spill,
      // Answers a moment later, as a query would; key 6 has lost the column meanwhile.
      readSourceRow: async (_schema, _table, key, columns) => {
        await new Promise((r) => setTimeout(r, 20));
        reads++;
        return key.id === '6' ? {} : Object.fromEntries(columns.map((col) => [col, `read for ${String(key.id)}`]));
      },
    });
    // Capture reads nothing more from the source while it fills values: the next change comes once it is done.
    const filled = (n: number): Promise<void> => waitFor('the values', async () => reads === n, 5000, 2).then(() => new Promise((r) => setTimeout(r, 5)));
    c.handleMessage(relation(1, 'a'), 1n);
    c.handleMessage({ tag: 'begin', finalLsn: 0x100n, commitTime: 0n, xid: 7 }, 0x10n);
    c.handleMessage(insert(1, '1', 'before'), 0x20n);
    // Key changes leaving the TOASTed note unchanged: a DELETE, and an INSERT whose note is read at the source.
    c.handleMessage({ tag: 'update', xid: undefined, relationId: 1, oldKind: 'K', oldTuple: ['2', null], newTuple: ['3', undefined] } as unknown as PgoutputMessage, 0x30n);
    await filled(1);
    c.handleMessage({ tag: 'update', xid: undefined, relationId: 1, oldKind: 'K', oldTuple: ['5', null], newTuple: ['6', undefined] } as unknown as PgoutputMessage, 0x40n);
    await filled(2);
    c.handleMessage(insert(1, '7', 'after'), 0x50n);
    c.handleMessage({ tag: 'commit', flags: 0, commitLsn: 0x100n, endLsn: 0x108n, commitTime: 0n }, 0x100n);
    c.handleMessage({ tag: 'begin', finalLsn: 0x200n, commitTime: 0n, xid: 8 }, 0x110n);
    await waitFor('the records', async () => records.length === 6, 5000, 5);
    expect(records.map((e) => [e.op, e.key.id, e.payload?.note ?? null, e.unchanged ?? null, e.seq])).toEqual([
      ['INSERT', '1', 'before', null, 1],
      ['DELETE', '2', null, null, 2],
      ['INSERT', '3', 'read for 3', null, 3],
      ['DELETE', '5', null, null, 4],
      ['INSERT', '6', null, ['note'], 5],
      ['INSERT', '7', 'after', null, 6],
    ]);
    expect(records.at(-1)?.tx_last).toBe(true);
  });
});
