import { stringify } from 'yaml';
import type { SynclineConfig } from '../config/schema.js';
import { parseDuration } from '../core/duration.js';

/**
 * Prometheus alerting rules generated from `monitoring.alerts` and `dead_letter`. Pure:
 * the caller writes the text (`syncline monitoring export`). Every alert says what it
 * means and what to do, so the person paged does not have to read the source.
 */
export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels: { severity: 'critical' | 'warning' };
  annotations: { summary: string; description: string };
}

export interface AlertRuleGroup {
  name: string;
  rules: AlertRule[];
}

/** Retained WAL above this, and still growing, means the slot is not advancing. */
export const RETAINED_WAL_WARNING_BYTES = 1024 ** 3;

export function alertRules(config: SynclineConfig): AlertRuleGroup[] {
  const a = config.monitoring.alerts;
  const slot = config.source.slots[0]?.name ?? 'the slot';
  const rules: AlertRule[] = [
    {
      alert: 'SynclineLagCritical',
      // Capture's own lag too: a capture process (split roles) exports no sync_lag_seconds for a
      // table it has not seen a change of, and a backlog it reads leaves apply idle at 0.
      expr: `max(sync_lag_seconds or sync_capture_lag_seconds) > ${num(a.lag_critical)}`,
      for: '1m',
      labels: { severity: 'critical' },
      annotations: {
        summary: `syncline apply is more than ${num(a.lag_critical)} s behind the source`,
        description:
          'The target is {{ $value | humanizeDuration }} behind the source: the oldest change being applied, or the oldest WAL capture has not stored yet, is that old ' +
          `(monitoring.alerts.lag_critical = ${num(a.lag_critical)} s). ` +
          'Run `syncline status -c CONFIG` to see the slot lag and records behind per partition. ' +
          'If apply is stuck, read its logs (sink errors, retries) and `syncline dlq list`; ' +
          'if it is only slow, add apply processes to the consumer group or raise consumer.batch_size; ' +
          'if capture is behind, check the source and `sync_slot_retained_wal_bytes`.',
      },
    },
    {
      alert: 'SynclineApplyStalled',
      // Split roles: with apply gone, the capture process still exports sync_lag_seconds 0,
      // sync_deadletter_count and sync_events_consumed_total 0, so neither the lag alert nor
      // SynclineMetricsAbsent notices. Summed over processes, a healthy split (capture
      // publishes, apply consumes) and a `run` (both) consume; `or vector(0)`: no consumed
      // series scraped at all is none consumed too. A dead apply's rate lasts the 5m window,
      // so this fires about 10 minutes after it stopped.
      expr: 'sum(rate(sync_events_published_total[5m])) > 0 and (sum(rate(sync_events_consumed_total[5m])) or vector(0)) == 0',
      for: '5m',
      labels: { severity: 'critical' },
      annotations: {
        summary: 'syncline publishes changes to the stream but no apply process consumes them',
        description:
          'Capture has published changes for 10 minutes and no process has read any from the stream: the target falls behind while ' +
          'sync_lag_seconds of the capture process reads 0. With `syncline capture` and `syncline apply` run apart, check that the ' +
          'apply processes are running (their logs, /healthz, their /metrics scraped) and `syncline status -c CONFIG` for records behind per partition. ' +
          'A `syncline run` that publishes without consuming is stuck in apply: read its logs.',
      },
    },
    {
      alert: 'SynclineDuplicateRateHigh',
      expr: `sync_duplicate_rate > ${num(a.duplicate_rate_warning)}`,
      for: '5m',
      labels: { severity: 'warning' },
      annotations: {
        summary: `more than ${pct(a.duplicate_rate_warning)} of consumed changes were skipped as duplicate or stale`,
        description:
          '{{ $value | humanizePercentage }} of the changes consumed in the last 60 s were already applied ' +
          `(monitoring.alerts.duplicate_rate_warning = ${num(a.duplicate_rate_warning)}). ` +
          'Nothing is applied twice (the version gate skips them), but it means replays: ' +
          'capture or apply restarting in a loop, two captures on one slot, or stream offsets not being committed. ' +
          'Check the restart count and logs of syncline processes and `syncline status -c CONFIG`.',
      },
    },
    {
      alert: 'SynclineDeadLetterCritical',
      expr: `sync_deadletter_count > ${num(a.deadletter_critical)}`,
      labels: { severity: 'critical' },
      annotations: {
        summary: `more than ${num(a.deadletter_critical)} changes are waiting in the dead-letter queue`,
        description:
          '{{ $value }} changes could not be applied and wait in the dead-letter queue; their rows are not updated at the target ' +
          `(monitoring.alerts.deadletter_critical = ${num(a.deadletter_critical)}). ` +
          'Run `syncline dlq list -c CONFIG` to see the reasons, fix the cause (target schema, constraints, bad data), ' +
          'then `syncline dlq replay -c CONFIG`.',
      },
    },
  ];
  if (config.dead_letter.enabled) {
    rules.push({
      alert: 'SynclineTableBlocked',
      expr: 'max by (table) (sync_table_blocked) > 0',
      for: '1m',
      labels: { severity: 'critical' },
      annotations: {
        summary: 'table {{ $labels.table }} is held: its target does not fit its changes',
        description:
          'The target table of {{ $labels.table }} is missing, lacks a column or has another key, so its changes wait in the ' +
          'dead-letter queue in order (TABLE_BLOCKED) while the other tables flow. `syncline status -c CONFIG` and ' +
          '`syncline dlq list --error TABLE_BLOCKED -c CONFIG` show why. Fix the target table; the held changes then apply by themselves.',
      },
    });
    rules.push({
      alert: 'SynclineDeadLetterWarning',
      expr: `sync_deadletter_count > ${num(config.dead_letter.alert_threshold)}`,
      labels: { severity: 'warning' },
      annotations: {
        summary: `more than ${num(config.dead_letter.alert_threshold)} changes are in the dead-letter queue`,
        description:
          `{{ $value }} changes wait in the dead-letter queue (dead_letter.alert_threshold = ${num(config.dead_letter.alert_threshold)}). ` +
          'Run `syncline dlq list -c CONFIG` to see why they failed; after fixing the cause, `syncline dlq replay -c CONFIG`.',
      },
    });
  }
  rules.push({
    alert: 'SynclineDriftDetected',
    expr: 'max by (table) (sync_drift_rows) > 0',
    labels: { severity: 'critical' },
    annotations: {
      summary: 'the target of {{ $labels.table }} differs from the source in {{ $value }} rows',
      description:
        'The last verification of {{ $labels.table }} found rows that differ between source and target and stayed different after ' +
        'apply had passed the source position they were read at (so it is not lag). Something wrote to the target behind syncline, ' +
        'or a change was lost. `syncline verify -c CONFIG --table {{ $labels.table }}` names the keys; ' +
        '`syncline repair -c CONFIG --table {{ $labels.table }} --dry-run` shows what a repair would change, then run it without --dry-run.',
    },
  });
  if (config.verify.interval) {
    // Three missed intervals (at least 10 minutes) without a finished pass, counted from the
    // process start too, so a fresh process does not page before its first pass could end.
    const staleSeconds = Math.max(600, (3 * parseDuration(config.verify.interval)) / 1000);
    rules.push({
      alert: 'SynclineVerifyStale',
      expr:
        `time() - max(sync_verify_last_success_timestamp) > ${staleSeconds} ` +
        `and time() - max(sync_process_process_start_time_seconds) > ${staleSeconds}`,
      for: '5m',
      labels: { severity: 'warning' },
      annotations: {
        summary: `no background verification has finished for more than ${staleSeconds} s`,
        description:
          `verify.interval is ${config.verify.interval}, but no pass over all tables has finished for ${staleSeconds} s: drift would go unseen. ` +
          'Check the run/apply logs for "verification" errors (source or target unreachable, lag_timeout too short for the current lag), ' +
          'and whether verify.max_rows_per_second is too low for the tables\' size; `syncline verify -c CONFIG` runs one pass by hand.',
      },
    });
  }
  rules.push(
    {
      alert: 'SynclineSlotRetainedWalGrowing',
      expr: `sync_slot_retained_wal_bytes > ${RETAINED_WAL_WARNING_BYTES} and deriv(sync_slot_retained_wal_bytes[15m]) > 0`,
      for: '15m',
      labels: { severity: 'warning' },
      annotations: {
        summary: `replication slot ${slot} retains more than 1 GiB of WAL and keeps growing`,
        description:
          'The source keeps {{ $value | humanize1024 }}B of WAL for the slot and the amount has grown for 15 minutes: ' +
          'capture is not confirming positions (stopped, stuck, or the stream is not acknowledging). ' +
          'The source disk fills up if this goes on. Check that `syncline capture`/`run` is running and its logs, and `syncline doctor -c CONFIG`. ' +
          'If the slot is abandoned, drop it on the source (pg_drop_replication_slot) and resynchronise the target.',
      },
    },
    {
      alert: 'SynclineMetricsAbsent',
      expr: 'absent(sync_deadletter_count)',
      for: '5m',
      labels: { severity: 'critical' },
      annotations: {
        summary: 'no syncline metrics are being scraped',
        description:
          'Prometheus has had no syncline series for 5 minutes: the process is down, or its /metrics endpoint ' +
          `(monitoring.host:monitoring.port, ${config.monitoring.host}:${config.monitoring.port}) is not reachable from Prometheus. ` +
          'Lag and dead-letter alerts cannot fire meanwhile. Check the syncline service and its /healthz and /readyz.',
      },
    },
  );
  return [{ name: 'syncline', rules }];
}

/** The rules as a Prometheus rule file (`promtool check rules` accepts it). */
export function alertRulesYaml(config: SynclineConfig): string {
  const header =
    '# Prometheus alerting rules for syncline, generated by `syncline monitoring export`\n' +
    '# from monitoring.alerts and dead_letter.alert_threshold. Regenerate after changing them.\n';
  return header + stringify({ groups: alertRules(config) }, { lineWidth: 0 });
}

/** A number as PromQL/YAML text: integers without exponent, fractions as written. */
function num(n: number): string {
  return Number.isInteger(n) ? n.toFixed(0) : String(n);
}

function pct(n: number): string {
  return `${+(n * 100).toFixed(4)}%`;
}
