import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureBuilt, ROOT } from '../helpers/cli.js';
import { runChaos } from './chaos.js';
import type { Feature } from './workload.js';

/**
 * The short, fixed-seed chaos run inside `npm test` (the long one is `npm run chaos`; see
 * README "Chaos testing"): the seeded workload on the embedded stream and the postgres sink,
 * with four faults (kill -9 / SIGTERM of `syncline run`, a target restart, `syncline snapshot` of a table
 * while it is written), then the harness's own row comparison and the audit trigger.
 *
 * Features: composite key declared out of column order, keyless REPLICA IDENTITY FULL table,
 * TOASTed values left unchanged by updates, key changes (of comp and items), delete + reinsert
 * in a transaction, savepoint rollbacks, TRUNCATE, large streamed transactions with ALTER
 * TABLE ADD COLUMN in the middle, snapshots under writes, key changes of rows whose TOASTed
 * value the update left unchanged (`toastkey`). Faults: kill -9 and SIGTERM of `syncline run`,
 * a snapshot under writes, a restart of the target PostgreSQL (the harness's own cluster).
 * Broker restarts need a broker (not the embedded stream): the long run has them.
 */
const SEED = Number(process.env.SYNCLINE_CHAOS_SEED ?? 20261204);
const FEATURES: Feature[] = ['comp', 'keyless', 'toast', 'keychange', 'toastkey', 'delreinsert', 'savepoint', 'truncate', 'large', 'ddl', 'snapshot'];

describe('chaos (short, fixed seed): embedded stream -> postgres sink', () => {
  it(`converges to the source with nothing applied twice under 4 faults (seed ${SEED})`, async () => {
    // SYNCLINE_CHAOS_CLI tests another build (e.g. one of a commit, while src/ is being edited).
    const cli = process.env.SYNCLINE_CHAOS_CLI ?? path.join(ROOT, 'dist/cli/main.js');
    if (!process.env.SYNCLINE_CHAOS_CLI) ensureBuilt();
    const lines: string[] = [];
    const result = await runChaos({
      seed: SEED,
      faults: 4,
      streams: ['embedded'],
      sinks: ['postgres'],
      features: new Set(FEATURES),
      faultKinds: new Set(['kill9', 'sigterm', 'snapshot', 'target']),
      mode: 'run',
      cli,
      root: ROOT,
      durationMs: 24_000,
      convergeTimeoutMs: 90_000,
      print: (l) => {
        lines.push(l);
        if (process.env.SYNCLINE_CHAOS_VERBOSE) process.stdout.write(`${l}\n`);
      },
    });
    const s = result.scenarios[0];
    expect(s?.faults.length).toBe(4);
    expect(s?.rowsCompared ?? 0).toBeGreaterThan(100);
    expect(result.ok, lines.filter((l) => !l.includes('waiting for convergence')).join('\n')).toBe(true);
  }, 240_000);
});
