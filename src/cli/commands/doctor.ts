import type { Command } from 'commander';
import { ConfigError, errorMessage } from '../../core/errors.js';
import { redactUrl } from '../../core/redact.js';
import { EXIT } from '../exit-codes.js';
import { configOption } from './options.js';

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check every prerequisite (source, slot, publication, tables, stream, sink, dead-letter queue) and print the fix for each problem; exit 0 ok, 1 a check failed, 2 invalid config')
    .addOption(configOption())
    .option('--json', 'print { ok, checks: [{ name, status, detail, fix? }] }')
    .action(async (opts: { config: string; json?: boolean }) => {
      const { loadConfigFile } = await import('../../config/load.js');
      let config;
      try {
        config = loadConfigFile(opts.config);
      } catch (err) {
        const issues = err instanceof ConfigError ? err.issues : [errorMessage(err)];
        const detail = redactUrl(issues.join('; '));
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ ok: false, checks: [{ name: 'config', status: 'fail', detail, fix: `correct ${opts.config}; syncline validate -c ${opts.config} lists every error` }] })}\n`);
        } else process.stderr.write(`${opts.config}: invalid\n${issues.map((e) => `  - ${redactUrl(e)}`).join('\n')}\n`);
        process.exitCode = EXIT.CONFIG;
        return;
      }
      const { formatReport, runDoctor } = await import('../../doctor/doctor.js');
      const { sourceConnection } = await import('../../compose/source-connection.js');
      const report = await runDoctor(config, sourceConnection(config));
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
      process.exitCode = report.ok ? EXIT.OK : EXIT.FAILURE;
    });
}
