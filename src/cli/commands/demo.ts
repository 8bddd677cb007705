import type { Command } from 'commander';
import { parseDuration } from '../../core/duration.js';
import { EXIT } from '../exit-codes.js';
import { durationArg, portArg, positiveIntegerArg } from './options.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the whole pipeline on an embedded PostgreSQL 17 with a load generator; nothing to install')
    .option('--duration <time>', 'how long to generate load (e.g. 20s, 2m)', durationArg, '30s')
    .option('--rate <n>', 'changes per second the load generator aims for', positiveIntegerArg, '500')
    .option('--metrics-port <port>', 'port for /metrics on 127.0.0.1', portArg, '9464')
    .option('--keep', 'keep the demo data directory')
    .action(async (opts: { duration: string; rate: string; metricsPort: string; keep?: boolean }) => {
      const { createLogger } = await import('../../log/logger.js');
      const log = createLogger(process.env.SYNCLINE_LOG_LEVEL ?? 'warn');
      // Loaded on demand: the other commands need none of the demo's machinery. The demo
      // installs its own SIGINT/SIGTERM/exit handlers while it runs (stop, clean up, exit).
      const { runDemo } = await import('../../demo/run-demo.js');
      const ok = await runDemo(
        { durationMs: parseDuration(opts.duration), rate: Number(opts.rate), metricsPort: Number(opts.metricsPort), keep: !!opts.keep, out: process.stdout },
        log,
      );
      log.flush();
      process.exitCode = ok ? EXIT.OK : EXIT.FAILURE;
    });
}
