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
    .option('--metrics-port <port>', 'port for /metrics and the dashboard on 127.0.0.1 (default: monitoring.port of -c, else 9464)', portArg)
    .option('-c, --config <file>', "your settings for the demo's pipeline (stream, consumer, sink options, monitoring); the demo's databases, slot and folder replace source.url, source.slots, sink.type, sink.url and stream.path")
    .option('--keep', 'keep the demo data directory')
    .option('--json', 'print one JSON object per line (progress, result) instead of text')
    .action(async (opts: { duration: string; rate: string; metricsPort?: string; config?: string; keep?: boolean; json?: boolean }) => {
      const { createLogger } = await import('../../log/logger.js');
      const log = createLogger(process.env.SYNCLINE_LOG_LEVEL ?? 'warn');
      // Read first: a bad file fails before anything starts (exit 2, like every command's -c).
      const config = opts.config === undefined ? undefined : (await import('../../config/load.js')).readConfigDocument(opts.config);
      // Loaded on demand: the other commands need none of the demo's machinery. The demo
      // installs its own SIGINT/SIGTERM/exit handlers while it runs (stop, clean up, exit).
      const { runDemo } = await import('../../demo/run-demo.js');
      const ok = await runDemo(
        {
          durationMs: parseDuration(opts.duration),
          rate: Number(opts.rate),
          metricsPort: opts.metricsPort === undefined ? undefined : Number(opts.metricsPort),
          keep: !!opts.keep,
          out: process.stdout,
          config,
          json: !!opts.json,
        },
        log,
      );
      log.flush();
      process.exitCode = ok ? EXIT.OK : EXIT.FAILURE;
    });
}
