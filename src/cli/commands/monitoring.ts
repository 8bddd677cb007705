import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { configOption } from './options.js';

export const ALERT_RULES_FILE = 'syncline-alert-rules.yml';
export const DASHBOARD_FILE = 'syncline-grafana-dashboard.json';

export function registerMonitoring(program: Command): void {
  const monitoring = program.command('monitoring').description('monitoring assets generated from the configuration');
  monitoring
    .command('export')
    .description(`write ${ALERT_RULES_FILE} (Prometheus alerting rules from monitoring.alerts) and ${DASHBOARD_FILE} (Grafana dashboard) to a directory`)
    .addOption(configOption())
    .option('--out <dir>', 'directory to write to (created if missing)', '.')
    .option('--json', 'print the written paths as JSON')
    .action(async (opts: { config: string; out: string; json?: boolean }) => {
      const { loadConfigFile } = await import('../../config/load.js');
      const { alertRulesYaml } = await import('../../monitoring/alert-rules.js');
      const { grafanaDashboard } = await import('../../monitoring/grafana-dashboard.js');
      const config = loadConfigFile(opts.config);
      mkdirSync(opts.out, { recursive: true });
      const rules = path.join(opts.out, ALERT_RULES_FILE);
      const dashboard = path.join(opts.out, DASHBOARD_FILE);
      writeFileSync(rules, alertRulesYaml(config));
      writeFileSync(dashboard, `${JSON.stringify(grafanaDashboard(config), null, 2)}\n`);
      if (opts.json) process.stdout.write(`${JSON.stringify({ alertRules: rules, dashboard })}\n`);
      else {
        process.stdout.write(
          `wrote ${rules}\n  Prometheus: add it under rule_files in prometheus.yml; check with: promtool check rules ${rules}\n` +
            `wrote ${dashboard}\n  Grafana: Dashboards > New > Import, upload the file and pick the Prometheus data source\n`,
        );
      }
    });
}
