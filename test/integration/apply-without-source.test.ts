/**
 * `syncline apply` alone where the source cannot be reached (run near the target, or while
 * the source is down): the start-up check of the source's cluster (source_servers) is skipped
 * with a WARN, and apply drains the stream into the target as before.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { openEmbeddedStream } from '../../src/stream/embedded/embedded-stream.js';
import { freePort, freshDatabase, machinePg15, uniqueName, waitFor } from '../helpers/postgres.js';
import pg from 'pg';
import pino from 'pino';

describe('apply alone, the source unreachable', () => {
  it('applies the stream, warning that the source cluster check is skipped', async () => {
    const name = uniqueName('syncline_apply_nosource');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-apply-nosource-'));
    const targetUrl = await freshDatabase(await machinePg15(), `${name}_target`);
    const target = new pg.Client({ connectionString: targetUrl });
    await target.connect();
    const ctl = new AbortController();
    try {
      await target.query('CREATE TABLE items (id int PRIMARY KEY, v text)');
      const change: ChangeEvent = {
        source: name, schema: 'public', table: 'items', op: 'INSERT', lsn: '0/16B3748', commit_lsn: '0/16B3748', xid: 1, seq: 1,
        commit_ts: new Date().toISOString(), key: { id: '1' }, payload: { id: '1', v: 'one' }, _version: '1', _schema_version: 1,
      };
      const stream = await openEmbeddedStream({ path: path.join(dir, 'stream'), partitions: 2 });
      const producer = await stream.producer();
      await producer.publish([{ key: partitionKeyOf(change), value: Buffer.from(JSON.stringify(change)) }]);
      await producer.close();
      await stream.close();
      const yaml = `source:
  url: postgres://postgres@127.0.0.1:${await freePort()}/nowhere
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [items] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { url: ${targetUrl} }
dead_letter: { url: ${targetUrl} }
monitoring: { enabled: false }
`;
      const warnings: string[] = [];
      const log = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
      const running = runPipeline(parseConfig(yaml), 'apply', log, ctl.signal);
      running.catch(() => undefined);
      await waitFor('row 1 at the target', async () => (await target.query('SELECT v FROM items WHERE id = 1')).rows[0]?.v === 'one', 30_000, 250, () => warnings.join('\n'));
      expect(warnings.some((w) => w.includes('apply starts without that check'))).toBe(true);
      ctl.abort();
      await running.catch(() => undefined);
    } finally {
      ctl.abort();
      await target.end();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
