import type { Command } from 'commander';
import { loadConfigFile } from '../../config/load.js';
import { createLogger } from '../../log/logger.js';
import { runPipeline, type Role } from '../run-command.js';
import { configOption } from './options.js';

const ROLES: readonly [Role, string][] = [
  ['run', 'capture and apply in one process (SIGTERM drains and exits cleanly)'],
  ['capture', 'capture only: replication slot -> stream'],
  ['apply', 'apply only: stream -> sink (several processes form a consumer group)'],
];

export function registerPipeline(program: Command): void {
  for (const [role, description] of ROLES) {
    const cmd = program
      .command(role)
      .description(description)
      .addOption(configOption());
    if (role !== 'capture') {
      cmd.option('--from <position>', 'replay from: beginning, an offset, partition:offset pairs, or a time (ISO-8601 or @epoch-ms)');
    }
    cmd.action(async (opts: { config: string; from?: string }) => {
        const log = createLogger();
        const config = loadConfigFile(opts.config);
        await runPipeline(config, role, log, undefined, undefined, opts.from);
        log.info('stopped cleanly');
        log.flush();
      });
  }
}
