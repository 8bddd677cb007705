import type { SynclineConfig } from '../config/schema.js';
import { RETAINED_WAL_WARNING_BYTES } from './alert-rules.js';

/**
 * A Grafana dashboard (JSON model, schemaVersion 39) for syncline's metrics, with the
 * thresholds of `monitoring.alerts` drawn on the panels. Pure: returns the object.
 * The Prometheus data source and the instances are dashboard variables, so the file
 * imports into any Grafana as is.
 */
export interface DashboardTarget {
  refId: string;
  expr: string;
  legendFormat: string;
  datasource: DataSourceRef;
}

export interface DashboardPanel {
  id: number;
  type: 'timeseries' | 'stat';
  title: string;
  description: string;
  datasource: DataSourceRef;
  gridPos: { x: number; y: number; w: number; h: number };
  targets: DashboardTarget[];
  fieldConfig: { defaults: Record<string, unknown>; overrides: unknown[] };
  options: Record<string, unknown>;
}

interface DataSourceRef {
  type: 'prometheus';
  uid: string;
}

export interface GrafanaDashboard {
  uid: string;
  title: string;
  description: string;
  tags: string[];
  schemaVersion: number;
  version: number;
  editable: boolean;
  time: { from: string; to: string };
  refresh: string;
  timezone: string;
  graphTooltip: number;
  templating: { list: Record<string, unknown>[] };
  annotations: { list: unknown[] };
  links: unknown[];
  panels: DashboardPanel[];
}

const DS: DataSourceRef = { type: 'prometheus', uid: '${datasource}' };
/** Every query is restricted to the instances picked in the `instance` variable. */
const SEL = 'instance=~"$instance"';
const RATE = '[$__rate_interval]';

type Threshold = { color: string; value: number | null };

export function grafanaDashboard(config: SynclineConfig): GrafanaDashboard {
  const a = config.monitoring.alerts;
  const dlqWarn = config.dead_letter.enabled ? Math.min(config.dead_letter.alert_threshold, a.deadletter_critical) : a.deadletter_critical;
  const lagSteps: Threshold[] = [green(), { color: 'red', value: a.lag_critical }];
  const dupSteps: Threshold[] = [green(), { color: 'orange', value: a.duplicate_rate_warning }];
  const dlqSteps: Threshold[] = [green(), { color: 'orange', value: dlqWarn }, { color: 'red', value: a.deadletter_critical }];
  const walSteps: Threshold[] = [green(), { color: 'orange', value: RETAINED_WAL_WARNING_BYTES }];

  const b = new PanelBuilder();
  // Row 1: the numbers an operator looks at first.
  b.stat('Max lag', 'Seconds the target is behind the source: from source commit to applied (worst table), or the age of the WAL capture has not stored yet. Red at monitoring.alerts.lag_critical.', 's', lagSteps, 6, [
    [`max(sync_lag_seconds{${SEL}} or sync_capture_lag_seconds{${SEL}})`, 'lag'],
  ]);
  b.stat('Duplicate rate', 'Share of consumed changes skipped as duplicate or stale over 60 s. Orange at monitoring.alerts.duplicate_rate_warning.', 'percentunit', dupSteps, 6, [
    [`max(sync_duplicate_rate{${SEL}})`, 'duplicate rate'],
  ]);
  b.stat('Dead-letter queue', 'Changes waiting in the dead-letter queue (syncline dlq list). Orange at dead_letter.alert_threshold, red at monitoring.alerts.deadletter_critical.', 'none', dlqSteps, 6, [
    [`max(sync_deadletter_count{${SEL}})`, 'dead letters'],
  ]);
  b.stat('Slot retained WAL', 'WAL the source keeps for the replication slot. Orange above 1 GiB.', 'bytes', walSteps, 6, [
    [`max(sync_slot_retained_wal_bytes{${SEL}})`, 'retained'],
  ]);
  // Rows 2+: time series.
  b.series('Lag per table', 'sync_lag_seconds by table: seconds from source commit to applied for the newest applied change; 0 when caught up. capture: sync_capture_lag_seconds, the age of the oldest WAL capture has not stored in the stream yet.', 's', lagSteps, 12, [
    [`max by (table) (sync_lag_seconds{${SEL}})`, '{{table}}'],
    [`max(sync_capture_lag_seconds{${SEL}})`, 'capture'],
  ]);
  b.series('Throughput (changes/s)', 'Captured from the slot, durably published to the stream, consumed and applied by apply, skipped as stale or duplicate by the version gate.', 'ops', null, 12, [
    [`sum(rate(sync_events_captured_total{${SEL}}${RATE}))`, 'captured'],
    [`sum(rate(sync_events_published_total{${SEL}}${RATE}))`, 'published'],
    [`sum(rate(sync_events_consumed_total{${SEL}}${RATE}))`, 'consumed'],
    [`sum(rate(sync_events_applied_total{${SEL}}${RATE}))`, 'applied'],
    [`sum(rate(sync_events_stale_total{${SEL}}${RATE}))`, 'stale'],
    [`sum(rate(sync_events_duplicate_total{${SEL}}${RATE}))`, 'duplicate'],
  ]);
  b.series('Duplicate rate', 'sync_duplicate_rate; threshold at monitoring.alerts.duplicate_rate_warning.', 'percentunit', dupSteps, 8, [
    [`max by (instance) (sync_duplicate_rate{${SEL}})`, '{{instance}}'],
  ]);
  b.series('Dead-letter queue depth', 'sync_deadletter_count, and the changes sent to it and retried per second.', 'none', dlqSteps, 8, [
    [`max(sync_deadletter_count{${SEL}})`, 'in queue'],
    [`sum(rate(sync_events_deadlettered_total{${SEL}}${RATE}))`, 'dead-lettered/s'],
    [`sum(rate(sync_events_retried_total{${SEL}}${RATE}))`, 'retried/s'],
  ]);
  b.series('Dead-letter oldest entry age', 'Age of the oldest change waiting in the dead-letter queue.', 's', null, 8, [
    [`max(sync_deadletter_oldest_age_seconds{${SEL}})`, 'oldest'],
  ]);
  b.series('Apply batch duration', 'Time to apply one batch at the sink including its commit (sync_apply_batch_duration_seconds), p50 and p99.', 's', null, 12, [
    [`histogram_quantile(0.5, sum by (le) (rate(sync_apply_batch_duration_seconds_bucket{${SEL}}${RATE})))`, 'p50'],
    [`histogram_quantile(0.99, sum by (le) (rate(sync_apply_batch_duration_seconds_bucket{${SEL}}${RATE})))`, 'p99'],
  ]);
  b.series('Slot retained WAL', 'sync_slot_retained_wal_bytes: WAL the source keeps for the slot. Growth while capture runs means the slot is not advancing.', 'bytes', walSteps, 12, [
    [`max by (instance) (sync_slot_retained_wal_bytes{${SEL}})`, '{{instance}}'],
  ]);
  b.series('Capture and apply LSN', 'sync_capture_lsn (slot position confirmed to the source) and sync_apply_lsn (commit LSN of the newest applied change), as WAL byte positions.', 'none', null, 12, [
    [`max(sync_capture_lsn{${SEL}})`, 'capture (confirmed)'],
    [`max(sync_apply_lsn{${SEL}})`, 'apply'],
  ]);

  return {
    uid: 'syncline',
    title: 'syncline',
    description: 'syncline change data capture: lag, throughput, duplicates, dead-letter queue, apply latency and replication slot. Generated by `syncline monitoring export`.',
    tags: ['syncline', 'postgresql', 'cdc'],
    schemaVersion: 39,
    version: 1,
    editable: true,
    time: { from: 'now-1h', to: 'now' },
    refresh: '30s',
    timezone: 'browser',
    graphTooltip: 1,
    templating: {
      list: [
        { name: 'datasource', label: 'Prometheus', type: 'datasource', query: 'prometheus', current: {}, hide: 0, refresh: 1, options: [] },
        {
          name: 'instance',
          label: 'instance',
          type: 'query',
          datasource: DS,
          query: { query: 'label_values(sync_deadletter_count, instance)', refId: 'instance' },
          definition: 'label_values(sync_deadletter_count, instance)',
          includeAll: true,
          multi: true,
          allValue: '.*',
          current: { selected: true, text: ['All'], value: ['$__all'] },
          refresh: 2,
          sort: 1,
          hide: 0,
          options: [],
        },
      ],
    },
    annotations: { list: [] },
    links: [],
    panels: b.panels,
  };
}

/** Lays panels out left to right on Grafana's 24-column grid. */
class PanelBuilder {
  readonly panels: DashboardPanel[] = [];
  private x = 0;
  private y = 0;
  private rowHeight = 0;

  stat(title: string, description: string, unit: string, steps: Threshold[], w: number, queries: [string, string][]): void {
    this.add('stat', title, description, unit, steps, w, 4, queries, {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      colorMode: 'background',
      graphMode: 'area',
      justifyMode: 'auto',
      orientation: 'auto',
      textMode: 'auto',
    });
  }

  series(title: string, description: string, unit: string, steps: Threshold[] | null, w: number, queries: [string, string][]): void {
    const custom: Record<string, unknown> = { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: true };
    if (steps) custom.thresholdsStyle = { mode: 'line' };
    this.add('timeseries', title, description, unit, steps ?? [green()], w, 8, queries, {
      legend: { displayMode: 'list', placement: 'bottom', showLegend: true },
      tooltip: { mode: 'multi', sort: 'desc' },
    }, custom);
  }

  private add(
    type: DashboardPanel['type'],
    title: string,
    description: string,
    unit: string,
    steps: Threshold[],
    w: number,
    h: number,
    queries: [string, string][],
    options: Record<string, unknown>,
    custom?: Record<string, unknown>,
  ): void {
    if (this.x + w > 24) {
      this.x = 0;
      this.y += this.rowHeight;
      this.rowHeight = 0;
    }
    const defaults: Record<string, unknown> = { unit, thresholds: { mode: 'absolute', steps }, color: { mode: type === 'stat' ? 'thresholds' : 'palette-classic' } };
    if (custom) defaults.custom = custom;
    this.panels.push({
      id: this.panels.length + 1,
      type,
      title,
      description,
      datasource: DS,
      gridPos: { x: this.x, y: this.y, w, h },
      targets: queries.map(([expr, legendFormat], i) => ({ refId: String.fromCharCode(65 + i), expr, legendFormat, datasource: DS })),
      fieldConfig: { defaults, overrides: [] },
      options,
    });
    this.x += w;
    this.rowHeight = Math.max(this.rowHeight, h);
  }
}

function green(): Threshold {
  return { color: 'green', value: null };
}
