import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import type { Logger } from '../../src/log/logger.js';
import type { Metrics } from '../../src/metrics/metrics.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, waitFor } from './postgres.js';

/**
 * The set-up most integration tests share: a fresh source and target database on the
 * machine's PostgreSQL 15, a temporary directory for the embedded stream, one slot named
 * after the test, and `syncline run` in this process started and stopped around the steps.
 * Each test keeps what it is about (its tables, publication and config options) in view.
 */
export interface PipelineFixture {
  /** The slot's name; the config names the publication `<name>_pub`. */
  readonly name: string;
  readonly dir: string;
  readonly sourceUrl: string;
  readonly targetUrl: string;
  readonly source: pg.Client;
  readonly target: pg.Client;
  /** A `syncline run` config for this pair: embedded stream in `dir`, sink the target database. */
  yaml(options?: ConfigOptions): Promise<string>;
  /** Starts `syncline run` with `yaml` and waits until its slot streams. */
  start(yaml: string, options?: { metrics?: Metrics; logger?: Logger }): Promise<RunningPipeline>;
  /** Drops the slot (when nothing holds it), closes both clients and removes `dir`. */
  close(): Promise<void>;
}

export interface ConfigOptions {
  /** Added to the slot's entry, e.g. `tables: [r]`. */
  slot?: string;
  /** Lines added under `source:`, e.g. `snapshot: never`. */
  source?: string[];
  /** Added to the sink's entry, e.g. `create_tables: true, schema_evolution: full`. */
  sink?: string;
  /** Top-level lines added as they are, e.g. `consumer: { ... }`. */
  extra?: string[];
  /** Stream partitions (2 unless given). */
  partitions?: number;
}

export interface RunningPipeline {
  /** Stops the run and waits until it has ended and released its slot. */
  stop(): Promise<void>;
}

export async function pipelineFixture(name: string): Promise<PipelineFixture> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `${name.replace(/_/g, '-')}-`));
  const { sourceUrl, targetUrl, source, target } = await sourceAndTarget(await machinePg15(), name);
  return {
    name,
    dir,
    sourceUrl,
    targetUrl,
    source,
    target,
    yaml: async (o = {}) => {
      const slot = [`name: ${name}`, `publication: ${name}_pub`, ...(o.slot ? [o.slot] : [])].join(', ');
      const sink = [`url: ${targetUrl}`, ...(o.sink ? [o.sink] : [])].join(', ');
      return [
        'source:',
        `  url: ${sourceUrl}`,
        ...(o.source ?? []).map((line) => `  ${line}`),
        `  slots: [{ ${slot} }]`,
        `stream: { path: ${path.join(dir, 'stream')}, partitions: ${o.partitions ?? 2} }`,
        ...(o.extra ?? []),
        `sink: { ${sink} }`,
        `monitoring: { port: ${await freePort()} }`,
        '',
      ].join('\n');
    },
    start: async (yaml, o = {}) => {
      const ctl = new AbortController();
      const running = runPipeline(parseConfig(yaml), 'run', o.logger ?? (await testLogger()), ctl.signal, o.metrics);
      running.catch(() => undefined);
      const stop = async (): Promise<void> => {
        ctl.abort();
        await running.catch(() => undefined);
        await waitFor('slot released', async () => !(await slotStreaming(source, name)), 10_000, 100);
      };
      try {
        // A run that fails at start says why here instead of as a timeout.
        await Promise.race([waitFor('streaming', () => slotStreaming(source, name)), running.then(() => Promise.reject(new Error('syncline run ended before its slot streamed')))]);
      } catch (err) {
        await stop().catch(() => undefined);
        throw err;
      }
      return { stop };
    },
    close: async () => {
      await source.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
      await source.end();
      await target.end();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Rows in `table` (`name` or `schema.name`), 0 while it does not exist (not created by apply yet). */
export async function countRows(client: pg.ClientBase, table: string): Promise<number> {
  const name = table.split('.').map((part) => client.escapeIdentifier(part)).join('.');
  try {
    return Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${name}`)).rows[0]?.n);
  } catch (err) {
    if ((err as { code?: string }).code === '42P01') return 0;
    throw err;
  }
}
