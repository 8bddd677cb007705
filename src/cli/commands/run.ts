import type { Command } from 'commander';
import type { Role } from '../../api/run-pipeline.js';
import { configOption, portArg } from './options.js';

const ROLES: readonly [Role, string][] = [
  ['run', 'capture and apply in one process (SIGTERM drains and exits cleanly)'],
  ['capture', 'capture only: replication slot -> stream'],
  ['apply', 'apply only: stream -> sink (several processes form a consumer group)'],
];

/** `syncline run | capture | apply`: the pipeline until SIGTERM/SIGINT, which drain it. */
export function registerRun(program: Command): void {
  for (const [role, description] of ROLES) {
    const cmd = program
      .command(role)
      .description(description)
      .addOption(configOption())
      .option('--metrics-port <port>', "port for /metrics and the dashboard, instead of monitoring.port (each process of one config on a host needs its own)", portArg);
    if (role !== 'capture') {
      cmd.option('--from <position>', 'replay from: beginning, an offset, partition:offset pairs, or a time (ISO-8601 or @epoch-ms)');
    }
    cmd.action(async (opts: { config: string; from?: string; metricsPort?: string }) => {
      const { createLogger } = await import('../../log/logger.js');
      const { loadConfigFile } = await import('../../config/load.js');
      const { runPipeline } = await import('../../api/run-pipeline.js');
      const log = createLogger();
      const loaded = loadConfigFile(opts.config);
      const config = opts.metricsPort === undefined ? loaded : { ...loaded, monitoring: { ...loaded.monitoring, port: Number(opts.metricsPort) } };
      // The only signal handlers of a pipeline: the library never installs any.
      const stop = new AbortController();
      const onSignal = (sig: NodeJS.Signals): void => {
        log.info({ signal: sig }, 'stopping: draining in-flight work');
        stop.abort();
      };
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
      try {
        await runPipeline(config, role, log, stop.signal, undefined, opts.from);
      } finally {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
      }
      log.info('stopped cleanly');
      log.flush();
    });
  }
}
