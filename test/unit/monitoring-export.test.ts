import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt, ROOT } from '../helpers/cli.js';
import { parse, stringify } from 'yaml';
import { Metrics } from '../../src/metrics/metrics.js';


function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, SYNCLINE_LOG_LEVEL: 'warn' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** promtool is required, never skipped: a missing binary fails the test and says how to install it. */
function promtool(args: string[], cwd: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8' });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error('promtool is not installed: run `apt-get install prometheus` (the Debian package provides /usr/bin/promtool); .ci/run installs it');
  }
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels: Record<string, string>;
  annotations: { summary: string; description: string };
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets: { refId: string; expr: string }[];
  fieldConfig: { defaults: { thresholds?: { steps: { value: number | null }[] } } };
}

const CONFIG = `source:
  url: postgres://syncline:s3cret@127.0.0.1:5432/app
  slots: [{ name: syncline_ops_mon, publication: syncline_ops_pub, tables: [items] }]
dead_letter: { alert_threshold: 3 }
monitoring:
  alerts: { lag_critical: 12, duplicate_rate_warning: 0.05, deadletter_critical: 7 }
`;

describe('syncline monitoring export', () => {
  let dir: string;
  let out: string;
  let rules: Rule[];
  let rulesFile: string;
  let dashboard: { schemaVersion: number; uid: string; title: string; panels: Panel[]; templating: { list: { name: string }[] } };

  beforeAll(() => {
    ensureBuilt();
    dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-ops-mon-'));
    out = path.join(dir, 'out');
    writeFileSync(path.join(dir, 'sync.yaml'), CONFIG);
    const r = cli(['monitoring', 'export', '-c', path.join(dir, 'sync.yaml'), '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    rulesFile = path.join(out, 'syncline-alert-rules.yml');
    rules = (parse(readFileSync(rulesFile, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
    dashboard = JSON.parse(readFileSync(path.join(out, 'syncline-grafana-dashboard.json'), 'utf8')) as typeof dashboard;
  }, 120_000);
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('writes alert rules that promtool accepts, with the configured thresholds', () => {
    const check = promtool(['check', 'rules', rulesFile], out);
    expect(check.output).toMatch(/SUCCESS: 9 rules found/);
    expect(check.status).toBe(0);
    const byName = new Map(rules.map((r) => [r.alert, r]));
    expect(byName.get('SynclineLagCritical')).toMatchObject({ expr: 'max(sync_lag_seconds or sync_capture_lag_seconds) > 12', for: '1m', labels: { severity: 'critical' } });
    expect(byName.get('SynclineDuplicateRateHigh')).toMatchObject({ expr: 'sync_duplicate_rate > 0.05', for: '5m', labels: { severity: 'warning' } });
    expect(byName.get('SynclineDeadLetterCritical')).toMatchObject({ expr: 'sync_deadletter_count > 7', labels: { severity: 'critical' } });
    expect(byName.get('SynclineDeadLetterWarning')).toMatchObject({ expr: 'sync_deadletter_count > 3', labels: { severity: 'warning' } });
    expect(byName.get('SynclineSlotRetainedWalGrowing')?.expr).toMatch(/sync_slot_retained_wal_bytes > 1073741824 and deriv\(sync_slot_retained_wal_bytes\[15m\]\) > 0/);
    for (const r of rules) {
      // Every alert says what to do, not only what happened.
      expect(r.annotations.summary.length).toBeGreaterThan(10);
      expect(r.annotations.description).toMatch(/syncline (status|dlq|doctor|capture|verify)|Check|check/);
    }
    // The password of the source URL never reaches generated files.
    expect(readFileSync(rulesFile, 'utf8')).not.toContain('s3cret');
  });

  it('the alerts fire on the series they are meant for, and not below the thresholds (promtool test rules)', () => {
    const a = (name: string): Rule => {
      const r = rules.find((x) => x.alert === name);
      if (!r) throw new Error(`no rule ${name}`);
      return r;
    };
    const fired = (name: string, value: string, template: string): { exp_labels: Record<string, string>; exp_annotations: Rule['annotations'] } => {
      const r = a(name);
      return { exp_labels: r.labels, exp_annotations: { summary: r.annotations.summary, description: r.annotations.description.replace(template, value) } };
    };
    const tests = {
      rule_files: [rulesFile],
      evaluation_interval: '1m',
      tests: [
        {
          interval: '1m',
          input_series: [
            { series: 'sync_lag_seconds{table="public.items"}', values: '5 5 20x10' },
            { series: 'sync_lag_seconds{table="public.other"}', values: '0x12' },
            { series: 'sync_duplicate_rate', values: '0.01x3 0.2x10' },
            { series: 'sync_deadletter_count', values: '0 5x3 8x3' },
            { series: 'sync_slot_retained_wal_bytes', values: '2147483648+1048576x40' },
          ],
          alert_rule_test: [
            // Lag above 12 s from minute 2 on; "for: 1m" makes it fire at minute 3.
            { eval_time: '2m', alertname: 'SynclineLagCritical', exp_alerts: [] },
            { eval_time: '4m', alertname: 'SynclineLagCritical', exp_alerts: [fired('SynclineLagCritical', '20s', '{{ $value | humanizeDuration }}')] },
            { eval_time: '5m', alertname: 'SynclineDuplicateRateHigh', exp_alerts: [] },
            { eval_time: '9m', alertname: 'SynclineDuplicateRateHigh', exp_alerts: [fired('SynclineDuplicateRateHigh', '20%', '{{ $value | humanizePercentage }}')] },
            { eval_time: '0m', alertname: 'SynclineDeadLetterWarning', exp_alerts: [] },
            { eval_time: '1m', alertname: 'SynclineDeadLetterWarning', exp_alerts: [fired('SynclineDeadLetterWarning', '5', '{{ $value }}')] },
            { eval_time: '1m', alertname: 'SynclineDeadLetterCritical', exp_alerts: [] },
            { eval_time: '5m', alertname: 'SynclineDeadLetterCritical', exp_alerts: [fired('SynclineDeadLetterCritical', '8', '{{ $value }}')] },
            { eval_time: '10m', alertname: 'SynclineSlotRetainedWalGrowing', exp_alerts: [] },
            {
              eval_time: '30m',
              alertname: 'SynclineSlotRetainedWalGrowing',
              exp_alerts: [fired('SynclineSlotRetainedWalGrowing', '2.029Gi', '{{ $value | humanize1024 }}')],
            },
            { eval_time: '10m', alertname: 'SynclineMetricsAbsent', exp_alerts: [] },
          ],
        },
        {
          interval: '1m',
          input_series: [
            { series: 'sync_table_blocked{table="public.ok"}', values: '0x10' },
            { series: 'sync_table_blocked{table="public.broken"}', values: '0 1x10' },
            { series: 'sync_deadletter_count', values: '0x10' },
          ],
          alert_rule_test: [
            { eval_time: '1m', alertname: 'SynclineTableBlocked', exp_alerts: [] },
            {
              eval_time: '3m',
              alertname: 'SynclineTableBlocked',
              exp_alerts: [
                {
                  exp_labels: { severity: 'critical', table: 'public.broken' },
                  exp_annotations: {
                    summary: a('SynclineTableBlocked').annotations.summary.replace('{{ $labels.table }}', 'public.broken'),
                    description: a('SynclineTableBlocked').annotations.description.replaceAll('{{ $labels.table }}', 'public.broken'),
                  },
                },
              ],
            },
          ],
        },
        {
          interval: '1m',
          input_series: [
            { series: 'sync_drift_rows{table="public.ok"}', values: '0x10' },
            { series: 'sync_drift_rows{table="public.drifted"}', values: '0 0 3x10' },
            { series: 'sync_deadletter_count', values: '0x10' },
          ],
          alert_rule_test: [
            { eval_time: '1m', alertname: 'SynclineDriftDetected', exp_alerts: [] },
            {
              eval_time: '3m',
              alertname: 'SynclineDriftDetected',
              exp_alerts: [
                {
                  exp_labels: { severity: 'critical', table: 'public.drifted' },
                  exp_annotations: {
                    summary: a('SynclineDriftDetected').annotations.summary.replace('{{ $labels.table }}', 'public.drifted').replace('{{ $value }}', '3'),
                    description: a('SynclineDriftDetected').annotations.description.replaceAll('{{ $labels.table }}', 'public.drifted'),
                  },
                },
              ],
            },
          ],
        },
        {
          // A capture process reading a backlog: apply idle (0), capture's own lag high.
          interval: '1m',
          input_series: [
            { series: 'sync_lag_seconds{instance="apply",table="public.items"}', values: '0x10' },
            { series: 'sync_capture_lag_seconds{instance="capture"}', values: '0 30x10' },
          ],
          alert_rule_test: [
            { eval_time: '1m', alertname: 'SynclineLagCritical', exp_alerts: [] },
            { eval_time: '3m', alertname: 'SynclineLagCritical', exp_alerts: [fired('SynclineLagCritical', '30s', '{{ $value | humanizeDuration }}')] },
          ],
        },
        {
          interval: '1m',
          input_series: [{ series: 'up{job="syncline"}', values: '0x10' }],
          alert_rule_test: [{ eval_time: '6m', alertname: 'SynclineMetricsAbsent', exp_alerts: [{ exp_labels: { severity: 'critical' }, exp_annotations: a('SynclineMetricsAbsent').annotations }] }],
        },
      ],
    };
    writeFileSync(path.join(out, 'rules.test.yml'), stringify(tests));
    const r = promtool(['test', 'rules', 'rules.test.yml'], out);
    expect(r.output).toMatch(/SUCCESS/);
    expect(r.status).toBe(0);
  });

  it('writes a Grafana dashboard whose every expression uses metrics syncline exports', async () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.uid).toBe('syncline');
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(['datasource', 'instance']);
    const metrics = new Metrics();
    // The gauges of one role join the registry once the process knows them (LateGauge): a
    // process of both roles that has, exports them all.
    for (const g of [metrics.captureLsn, metrics.applyLsn, metrics.slotRetainedWalBytes, metrics.consumerLag, metrics.captureLagSeconds]) g.set(1);
    const known = new Set<string>();
    for (const m of await metrics.registry.getMetricsAsJSON()) {
      known.add(m.name);
      // prom-client types `type` as an enum; at run time it is the string.
      if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) known.add(`${m.name}${s}`);
    }
    const ids = new Set<number>();
    const exprs: string[] = [];
    for (const p of dashboard.panels) {
      expect(ids.has(p.id), `panel id ${p.id} is unique`).toBe(false);
      ids.add(p.id);
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
      expect(p.targets.length, `panel ${p.title} has queries`).toBeGreaterThan(0);
      for (const t of p.targets) {
        const used = t.expr.match(/\bsync_[a-z0-9_]+/g) ?? [];
        expect(used.length, `${p.title}: ${t.expr} uses a sync_ metric`).toBeGreaterThan(0);
        for (const name of used) expect(known.has(name), `${p.title}: ${name} is exported by syncline`).toBe(true);
        exprs.push(t.expr);
      }
    }
    const all = exprs.join('\n');
    expect(all).toMatch(/max by \(table\) \(sync_lag_seconds/);
    expect(all).toContain('sync_capture_lag_seconds');
    for (const c of ['captured', 'applied', 'stale', 'duplicate']) expect(all).toContain(`rate(sync_events_${c}_total`);
    expect(all).toContain('sync_duplicate_rate');
    expect(all).toContain('sync_deadletter_count');
    expect(all).toMatch(/histogram_quantile\(0\.5, sum by \(le\) \(rate\(sync_apply_batch_duration_seconds_bucket/);
    expect(all).toMatch(/histogram_quantile\(0\.99, /);
    expect(all).toContain('sync_slot_retained_wal_bytes');
    expect(all).toContain('sync_capture_lsn');
    expect(all).toContain('sync_apply_lsn');
    // Thresholds drawn from the configuration.
    const lag = dashboard.panels.find((p) => p.title === 'Lag per table');
    expect(lag?.fieldConfig.defaults.thresholds?.steps.map((s) => s.value)).toEqual([null, 12]);
    const dlq = dashboard.panels.find((p) => p.title === 'Dead-letter queue');
    expect(dlq?.fieldConfig.defaults.thresholds?.steps.map((s) => s.value)).toEqual([null, 3, 7]);

    // Every expression is valid PromQL: promtool parses them as recording rules.
    const recording = {
      groups: [
        {
          name: 'dashboard',
          rules: exprs.map((e, i) => ({ record: `syncline:dashboard_expr_${i}`, expr: e.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*') })),
        },
      ],
    };
    writeFileSync(path.join(out, 'dashboard-exprs.yml'), stringify(recording));
    const r = promtool(['check', 'rules', 'dashboard-exprs.yml'], out);
    expect(r.output).toMatch(new RegExp(`SUCCESS: ${exprs.length} rules found`));
    expect(r.status).toBe(0);
  });

  // Split roles: the capture process keeps exporting sync_lag_seconds 0, sync_deadletter_count,
  // sync_duplicate_rate and sync_events_consumed_total 0 when apply is gone, which keeps the lag
  // alert and SynclineMetricsAbsent quiet. Changes published with none consumed is what shows it.
  it('SynclineApplyStalled fires when changes are published and none consumed, not for a healthy run or split (promtool test rules)', () => {
    const stalled = rules.find((x) => x.alert === 'SynclineApplyStalled');
    expect(stalled).toMatchObject({
      expr: 'sum(rate(sync_events_published_total[5m])) > 0 and (sum(rate(sync_events_consumed_total[5m])) or vector(0)) == 0',
      for: '5m',
      labels: { severity: 'critical' },
    });
    const fires = [{ exp_labels: stalled!.labels, exp_annotations: stalled!.annotations }];
    const quiet = (at: string[]) => at.map((eval_time) => ({ eval_time, alertname: 'SynclineApplyStalled', exp_alerts: [] }));
    const tests = {
      rule_files: [rulesFile],
      evaluation_interval: '1m',
      tests: [
        {
          // Published rising, consumed flat (one process, or the capture process alone): fires
          // once the condition held for 5 minutes.
          interval: '1m',
          input_series: [
            { series: 'sync_events_published_total{instance="capture"}', values: '0+100x20' },
            { series: 'sync_events_consumed_total{instance="capture"}', values: '0x20' },
            { series: 'sync_deadletter_count{instance="capture"}', values: '0x20' },
          ],
          alert_rule_test: [
            { eval_time: '3m', alertname: 'SynclineApplyStalled', exp_alerts: [] },
            { eval_time: '10m', alertname: 'SynclineApplyStalled', exp_alerts: fires },
          ],
        },
        {
          // A split whose apply process dies at minute 10: its series end, capture's stay.
          interval: '1m',
          input_series: [
            { series: 'sync_events_published_total{instance="capture"}', values: '0+100x40' },
            { series: 'sync_events_consumed_total{instance="capture"}', values: '0x40' },
            { series: 'sync_events_consumed_total{instance="apply"}', values: '0+100x10 stale' },
          ],
          alert_rule_test: [
            { eval_time: '10m', alertname: 'SynclineApplyStalled', exp_alerts: [] },
            { eval_time: '14m', alertname: 'SynclineApplyStalled', exp_alerts: [] },
            { eval_time: '25m', alertname: 'SynclineApplyStalled', exp_alerts: fires },
          ],
        },
        {
          // Only the capture process is scraped, and it exports no consumed series at all.
          interval: '1m',
          input_series: [{ series: 'sync_events_published_total{instance="capture"}', values: '0+100x20' }],
          alert_rule_test: [{ eval_time: '15m', alertname: 'SynclineApplyStalled', exp_alerts: fires }],
        },
        {
          // Healthy split: capture publishes (its consumed stays 0), apply consumes.
          interval: '1m',
          input_series: [
            { series: 'sync_events_published_total{instance="capture"}', values: '0+100x30' },
            { series: 'sync_events_consumed_total{instance="capture"}', values: '0x30' },
            { series: 'sync_events_published_total{instance="apply"}', values: '0x30' },
            { series: 'sync_events_consumed_total{instance="apply"}', values: '0+100x30' },
          ],
          alert_rule_test: quiet(['5m', '10m', '20m', '30m']),
        },
        {
          // Healthy `syncline run`: one process publishes and consumes.
          interval: '1m',
          input_series: [
            { series: 'sync_events_published_total{instance="run"}', values: '0+100x30' },
            { series: 'sync_events_consumed_total{instance="run"}', values: '0+100x30' },
          ],
          alert_rule_test: quiet(['5m', '10m', '20m', '30m']),
        },
        {
          // Idle: nothing published, nothing consumed.
          interval: '1m',
          input_series: [
            { series: 'sync_events_published_total{instance="capture"}', values: '5x30' },
            { series: 'sync_events_consumed_total{instance="capture"}', values: '0x30' },
            { series: 'sync_events_consumed_total{instance="apply"}', values: '5x30' },
          ],
          alert_rule_test: quiet(['10m', '20m']),
        },
      ],
    };
    writeFileSync(path.join(out, 'stalled.test.yml'), stringify(tests));
    const r = promtool(['test', 'rules', 'stalled.test.yml'], out);
    expect(r.output).toMatch(/SUCCESS/);
    expect(r.status).toBe(0);
  });

  it('with verify.interval, an alert fires when no background verification has finished for three intervals', () => {
    const withInterval = path.join(dir, 'verify.yaml');
    writeFileSync(withInterval, `${CONFIG}verify: { interval: 5m }\n`);
    const outVerify = path.join(dir, 'out-verify');
    const r = cli(['monitoring', 'export', '-c', withInterval, '--out', outVerify]);
    expect(r.status).toBe(0);
    const file = path.join(outVerify, 'syncline-alert-rules.yml');
    const stale = (parse(readFileSync(file, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules).find((x) => x.alert === 'SynclineVerifyStale');
    expect(stale?.expr).toBe('time() - max(sync_verify_last_success_timestamp) > 900 and time() - max(sync_process_process_start_time_seconds) > 900');
    const series = (lastSuccess: string) => [
      { series: 'sync_verify_last_success_timestamp', values: lastSuccess },
      { series: 'sync_process_process_start_time_seconds', values: '0x60' },
    ];
    const tests = {
      rule_files: [file],
      evaluation_interval: '1m',
      tests: [
        // Passes finish every 5 minutes (the timestamp follows the clock): never fires.
        { interval: '1m', input_series: series('0+60x60'), alert_rule_test: [{ eval_time: '50m', alertname: 'SynclineVerifyStale', exp_alerts: [] }] },
        // The last pass finished at minute 5, none after: 15 min later plus "for: 5m" it fires.
        {
          interval: '1m',
          input_series: series('0 0 0 0 0 300x55'),
          alert_rule_test: [
            { eval_time: '20m', alertname: 'SynclineVerifyStale', exp_alerts: [] },
            { eval_time: '30m', alertname: 'SynclineVerifyStale', exp_alerts: [{ exp_labels: { severity: 'warning' }, exp_annotations: stale!.annotations }] },
          ],
        },
      ],
    };
    writeFileSync(path.join(outVerify, 'verify.test.yml'), stringify(tests));
    const t = promtool(['test', 'rules', 'verify.test.yml'], outVerify);
    expect(t.output).toMatch(/SUCCESS/);
    expect(t.status).toBe(0);
  });

  it('an invalid configuration exits 2 and writes nothing', () => {
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(bad, 'source: { slots: [] }\nmonitoring: { alerts: { lag_critical: -1 } }\n');
    const r = cli(['monitoring', 'export', '-c', bad, '--out', path.join(dir, 'nothing')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/lag_critical/);
    expect(existsSync(path.join(dir, 'nothing'))).toBe(false);
  });
});
