import { existsSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from '../../core/errors.js';
import { INIT_TEMPLATE } from '../init-template.js';
import { configOption } from './options.js';

export function registerInit(program: Command): void {
  program
    .command('init')
    .description('write a commented starter configuration')
    .addOption(configOption())
    .option('--force', 'overwrite an existing file')
    .action((opts: { config: string; force?: boolean }) => {
      if (existsSync(opts.config) && !opts.force) {
        throw new UsageError(`${opts.config} exists; use --force to overwrite`);
      }
      // The header names the file as the user called it.
      writeFileSync(opts.config, INIT_TEMPLATE.replace('validate -c syncline.yaml', `validate -c ${opts.config}`));
      process.stdout.write(`wrote ${opts.config}; edit it, then: syncline validate -c ${opts.config}\n`);
    });
}
