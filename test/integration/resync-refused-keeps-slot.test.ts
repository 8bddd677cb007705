/**
 * `syncline resync --force` that cannot make the publication ready (create_publication off
 * and a configured table missing from it, or a configured table that does not exist) must
 * refuse before it drops the slot. Since 6bc0a70 it ensured the publication after the drop
 * (red17): the healthy slot was gone, no new one made, and `syncline run` then refused with
 * 'slot was dropped after capture streamed from it', sending the operator back to resync.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfigFile } from '../../src/config/load.js';
import { resync } from '../../src/ops/resync.js';
import { freshDatabase, machinePg15, uniqueName } from '../helpers/postgres.js';

describe('resync --force refused by the publication', () => {
  const name = uniqueName('red17_resync_refused');
  let dir: string;
  let source: pg.Client;
  let sourceUrl: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'red17-resync-refused-'));
    sourceUrl = await freshDatabase(await machinePg15(), name);
    source = new pg.Client({ connectionString: sourceUrl });
    await source.connect();
    await source.query(`CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); CREATE PUBLICATION ${name}_pub FOR TABLE a`);
    await source.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [name]);
  }, 60_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  const config = async (tables: string): Promise<string> => {
    const file = path.join(dir, 'sync.yaml');
    await writeFile(file, `source:
  url: ${sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [${tables}], create_publication: false }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 1 }
sink: { url: ${sourceUrl} }
monitoring: { enabled: false }
`);
    return file;
  };

  const slotExists = async (): Promise<boolean> => (await source.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [name])).rowCount === 1;
  // Each case starts with the healthy slot (a failing one before may have dropped it).
  beforeEach(async () => {
    if (!(await slotExists())) await source.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [name]);
  });

  it('keeps the slot when the publication lacks a configured table', async () => {
    const err = await resync(loadConfigFile(await config('a, b')), { force: true }).then(() => undefined, (e: unknown) => e as Error);
    expect(err?.message).toContain('lacks table(s) public.b');
    expect(await slotExists()).toBe(true);
  });

  it('keeps the slot when a configured table does not exist', async () => {
    const err = await resync(loadConfigFile(await config('a, gone')), { force: true }).then(() => undefined, (e: unknown) => e as Error);
    expect(err?.message).toContain('public.gone does not exist');
    expect(await slotExists()).toBe(true);
  });
});
