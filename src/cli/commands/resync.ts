import type { Command } from 'commander';
import { EXIT } from '../exit-codes.js';
import { configOption } from './options.js';

/** `syncline resync`: see ops/resync.ts. */
export function registerResync(program: Command): void {
  program
    .command('resync')
    .description('recover from a lost replication slot: new slot + snapshot of every table')
    .addOption(configOption())
    .option('--force', 'also drop a slot that is not lost (its unconsumed changes are discarded)')
    .option('--json', 'print JSON')
    .action(async (opts: { config: string; force?: boolean; json?: boolean }) => {
      const { loadConfigFile } = await import('../../config/load.js');
      const { resync } = await import('../../ops/resync.js');
      const result = await resync(loadConfigFile(opts.config), { force: !!opts.force });
      if (opts.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else {
        process.stdout.write(`${result.dropped ? 'dropped and re-created' : 'created'} slot ${result.slot}; queued snapshot(s) of ${result.tables.join(', ')}\n`);
        if (result.rebased) {
          process.stdout.write(`the source is another cluster (system identifier ${result.rebased.to}, the target's rows came from ${result.rebased.from}): reset the version of ${result.rebased.rows} target row(s)\n`);
        }
        process.stdout.write('next: start syncline run (it streams from the new slot and performs the snapshots), then syncline repair removes rows deleted while the slot was lost\n');
      }
      process.exitCode = EXIT.OK;
    });
}
