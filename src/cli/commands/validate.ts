import type { Command } from 'commander';
import { ConfigError, errorMessage } from '../../core/errors.js';
import { EXIT } from '../exit-codes.js';
import { configOption } from './options.js';
import { slotOf } from '../../config/slot.js';

export function registerValidate(program: Command): void {
  program
    .command('validate')
    .description('check a configuration file; exit 0 if valid, 2 with every error and its path')
    .addOption(configOption())
    .option('--json', 'print the result as JSON')
    .action(async (opts: { config: string; json?: boolean }) => {
      const { loadConfigFile } = await import('../../config/load.js');
      try {
        const config = loadConfigFile(opts.config);
        if (opts.json) process.stdout.write(`${JSON.stringify({ valid: true, errors: [] })}\n`);
        else process.stdout.write(`${opts.config}: valid (source slot ${slotOf(config).name}, stream ${config.stream.broker}, sink ${config.sink.type})\n`);
      } catch (err) {
        const errors = err instanceof ConfigError ? err.issues : [errorMessage(err)];
        if (opts.json) process.stdout.write(`${JSON.stringify({ valid: false, errors })}\n`);
        else process.stderr.write(`${opts.config}: invalid\n${errors.map((e) => `  - ${e}`).join('\n')}\n`);
        process.exitCode = EXIT.CONFIG;
      }
    });
}
