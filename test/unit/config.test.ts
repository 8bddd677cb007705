import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfigFile, parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/core/errors.js';

// The design's template; the repository keeps a copy in examples/ for clones without shared/.
const SHARED_TEMPLATE = path.resolve(__dirname, '../../../shared/examples/sync-pipeline.config.yaml');
const TEMPLATE = existsSync(SHARED_TEMPLATE) ? SHARED_TEMPLATE : path.resolve(__dirname, '../../examples/sync-pipeline.config.yaml');
const CLI = path.resolve(__dirname, '../../dist/cli/main.js');

function problems(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(text, env);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues];
    throw err;
  }
  return [];
}

describe('configuration', () => {
  it('loads the design template as written, connection URLs from the environment', () => {
    const c = loadConfigFile(TEMPLATE, { SYNCLINE_SOURCE_URL: 'postgres://u:p@db/app', SYNCLINE_SINK_URL: 'postgres://t/app', SYNCLINE_STREAM_BROKERS: 'k1:9092,k2:9092' });
    expect(c.source.url).toBe('postgres://u:p@db/app');
    expect(c.sink.url).toBe('postgres://t/app');
    expect(c.source.slots[0]).toMatchObject({ name: 'sync_primary', publication: 'sync_pub', tables: ['orders', 'users', 'inventory'] });
    expect(c.stream).toMatchObject({ broker: 'kafka', topic: 'db-changes', partitions: 6, retention_hours: 168, brokers: ['k1:9092', 'k2:9092'] });
    expect(c.consumer.deduplication).toMatchObject({ backend: 'redis', key_pattern: 'sync:{source}:{table}:{lsn}', ttl_seconds: 86400 });
    expect(c.consumer.retry).toEqual({ max_attempts: 5, backoff_base_ms: 1000, backoff_max_ms: 30000, jitter: true, held_table_interval_ms: 10000 });
    expect(c.sink).toMatchObject({ consistency: 'eventual', version_gate: true, conflict_strategy: 'source_lsn_priority', type: 'postgres' });
    expect(c.dead_letter).toEqual({ enabled: true, topic: 'db-changes.dlq', alert_threshold: 50 });
    expect(c.monitoring).toMatchObject({ host: '127.0.0.1', port: 9464, alerts: { lag_critical: 30, duplicate_rate_warning: 0.02, deadletter_critical: 100 } });
  });

  it('reports every problem at once, each with its path', () => {
    const found = problems(`
source:
  slots:
    - name: Bad-Name
      tables: [a]
  colour: blue
stream:
  broker: rabbit
  partitions: 0
consumer:
  retry: { max_attempts: 0 }
monitoring:
  port: 70000
`);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^source\.slots\[0\]\.name: /),
        expect.stringMatching(/^source\.slots\[0\]\.publication: /),
        expect.stringMatching(/^source\.colour: unknown key/),
        expect.stringMatching(/^stream\.broker: /),
        expect.stringMatching(/^stream\.partitions: /),
        expect.stringMatching(/^consumer\.retry\.max_attempts: /),
        expect.stringMatching(/^monitoring\.port: /),
      ]),
    );
    expect(found.length).toBeGreaterThanOrEqual(7);
  });

  it('names each unknown key at its own path (a.b.key), also several in one section and at the root', () => {
    const text = 'source:\n  slots: [{ name: s, publication: p, bogus: 1 }]\nstream:\n  brokerz: x\n  partitons: 3\ntypo_section: 1\n';
    expect(problems(text)).toEqual(
      expect.arrayContaining([
        'source.slots[0].bogus: unknown key',
        'stream.brokerz: unknown key',
        'stream.partitons: unknown key',
        'typo_section: unknown key',
      ]),
    );
  });

  it('interpolates ${VAR} and ${VAR:-default}, and names unset variables with their path', () => {
    const text = 'source:\n  url: ${SRC}\n  slots: [{ name: s, publication: p }]\nsink:\n  url: ${DST:-postgres://fallback/db}\n';
    expect(parseConfig(text, { SRC: 'postgres://a/b' }).sink.url).toBe('postgres://fallback/db');
    expect(parseConfig(text, { SRC: 'postgres://a/b' }).source.url).toBe('postgres://a/b');
    expect(problems(text, {})).toEqual([expect.stringMatching(/^source\.url: environment variable SRC is not set/)]);
  });

  it('a ${VAR} where the schema wants a number or boolean gives one, as YAML would have read it written in place', () => {
    const text = [
      'source:',
      '  slots:',
      '    - name: ${SLOT}',
      '      publication: p',
      '  heartbeat_interval_ms: ${HB:-2500}',
      'stream:',
      '  partitions: ${PARTS}',
      'consumer:',
      '  retry:',
      '    jitter: ${JITTER}',
      'sink:',
      '  version_gate: ${GATE:-true}',
      'monitoring:',
      '  port: ${PORT:-9464}',
      '  dashboard_token: ${TOKEN}',
      '  alerts:',
      '    duplicate_rate_warning: ${DUP}',
    ].join('\n');
    // A string key keeps a value of digits as text; the others take their number or boolean.
    const c = parseConfig(text, { SLOT: '123', PARTS: '4', JITTER: 'false', PORT: '19999', TOKEN: '0042', DUP: '0.05' });
    expect(c.source.slots[0]?.name).toBe('123');
    expect(c.source.heartbeat_interval_ms).toBe(2500);
    expect(c.stream.partitions).toBe(4);
    expect(c.consumer.retry.jitter).toBe(false);
    expect(c.sink.version_gate).toBe(true);
    expect(c.monitoring.port).toBe(19999);
    expect(c.monitoring.dashboard_token).toBe('0042');
    expect(c.monitoring.alerts.duplicate_rate_warning).toBe(0.05);
    // Not a number: the schema's message, with the path; a written string stays one.
    expect(problems(text, { SLOT: 's', PARTS: 'six', JITTER: 'no', TOKEN: 't', DUP: '1' })).toEqual([
      expect.stringMatching(/^stream\.partitions: Expected number, received string/),
      expect.stringMatching(/^consumer\.retry\.jitter: Expected boolean, received string/),
    ]);
    expect(problems('source:\n  slots: [{ name: s, publication: p }]\nstream:\n  partitions: "4"\n')).toEqual([expect.stringMatching(/^stream\.partitions: Expected number/)]);
  });

  it('stream.brokers: a list, or one string of comma-separated host:port (as SYNCLINE_STREAM_BROKERS)', () => {
    const base = 'source:\n  slots:\n    - name: s\n      publication: p\nstream:\n  broker: kafka\n  brokers: ';
    expect(parseConfig(`${base}127.0.0.1:9092\n`).stream.brokers).toEqual(['127.0.0.1:9092']);
    expect(parseConfig(`${base}\${B}\n`, { B: 'k1:9092, k2:9093' }).stream.brokers).toEqual(['k1:9092', 'k2:9093']);
    expect(parseConfig(`${base}[k1:9092]\n`).stream.brokers).toEqual(['k1:9092']);
    expect(problems(`${base}k1\n`)).toEqual([expect.stringMatching(/^stream\.brokers\[0\]: expected host:port/)]);
    expect(problems(`${base}""\n`)).toEqual([expect.stringMatching(/^stream\.brokers: /)]);
  });

  it('a sink.url for another kind of server than sink.type is an error at sink.url, not a client\'s confusion at run time (red team 3)', () => {
    const base = (sink: string, dlq = ''): string => `source: { url: postgres://s/app, slots: [{ name: s1, publication: p1, tables: [t] }] }\nsink: ${sink}\n${dlq}`;
    expect(problems(base('{ url: "mysql://root@127.0.0.1:3306/app" }'))).toEqual([expect.stringMatching(/^sink\.url: a mysql URL, but sink\.type is postgres \(the default\): set sink\.type: mysql/)]);
    expect(problems(base('{ type: redis, url: "postgresql://t/app" }'))).toEqual([expect.stringMatching(/^sink\.url: a postgres URL, but sink\.type is redis/)]);
    expect(problems(base('{ type: mysql, url: "mysql://root@h/app" }', 'dead_letter: { url: "redis://h:6379" }'))).toEqual([expect.stringMatching(/^dead_letter\.url: a redis URL/)]);
    for (const ok of ['{ url: "postgres://t/app" }', '{ type: mysql, url: "mysql://u:p@h:3306/app" }', '{ type: sqlite, url: ./target.db }', '{ type: sqlite, url: "sqlite:///tmp/x.db" }', '{ type: redis, url: "rediss://h:6380/1" }', '{ type: webhook, url: "https://hook.example/x" }']) {
      expect(problems(base(ok))).toEqual([]);
    }
  });

  it('reports YAML syntax errors with a line number', () => {
    expect(problems('source: [unclosed\n')[0]).toMatch(/YAML syntax \(line \d+\)/);
  });

  it('syncline validate exits 0 for a valid file and 2 with every error', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'syncline-cfg-'));
    const good = path.join(dir, 'good.yaml');
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(good, readFileSync(TEMPLATE));
    writeFileSync(bad, 'source:\n  slots: []\nsink:\n  type: oracle\n');
    const ok = execFileSync(process.execPath, [CLI, 'validate', '-c', good], { env: { ...process.env, SYNCLINE_SOURCE_URL: 'postgres://x/y' } }).toString();
    expect(ok).toMatch(/valid/);
    const r = spawnSync(process.execPath, [CLI, 'validate', '--json', '-c', bad]);
    expect(r.status).toBe(2);
    const out = JSON.parse(r.stdout.toString()) as { valid: boolean; errors: string[] };
    expect(out.valid).toBe(false);
    expect(out.errors).toEqual(expect.arrayContaining([expect.stringMatching(/^source\.slots: /), expect.stringMatching(/^sink\.type: /)]));
    const missing = spawnSync(process.execPath, [CLI, 'validate', '-c', path.join(dir, 'nope.yaml')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr.toString()).toMatch(/cannot read/);
  });
});

describe('stream formats and the schema registry', () => {
  const base = (stream: string): string => `
source:
  slots: [{ name: s, publication: p }]
stream:
${stream}
`;

  it('defaults: json, no registry, topic_record subjects, BACKWARD', () => {
    const c = parseConfig(base('  broker: embedded'), {});
    expect(c.stream).toMatchObject({ format: 'json', schema_registry: false, subject_strategy: 'topic_record', schema_compatibility: 'BACKWARD' });
    expect(c.stream.schema_registry_url).toBeUndefined();
  });

  it('takes the registry URL from SYNCLINE_SCHEMA_REGISTRY_URL when the file has none', () => {
    const c = parseConfig(base('  broker: kafka\n  brokers: ["k:9092"]\n  format: avro\n  schema_registry: true'), { SYNCLINE_SCHEMA_REGISTRY_URL: 'http://reg:8081' });
    expect(c.stream).toMatchObject({ format: 'avro', schema_registry: true, schema_registry_url: 'http://reg:8081' });
  });

  it('a typed format on kafka or nats needs the registry; the embedded stream keeps schemas locally', () => {
    expect(problems(base('  broker: kafka\n  format: protobuf'))).toEqual([expect.stringMatching(/^stream\.schema_registry: format protobuf on kafka needs a schema registry/)]);
    expect(problems(base('  broker: nats\n  format: json_schema'))).toHaveLength(1);
    expect(problems(base('  broker: embedded\n  format: avro'))).toEqual([]);
  });

  it('refuses one subject for every table under a compatibility level that forbids it, and unknown values', () => {
    expect(problems(base('  broker: embedded\n  format: avro\n  subject_strategy: topic'))).toEqual([expect.stringMatching(/^stream\.subject_strategy: topic puts every table's schema under one subject/)]);
    expect(problems(base('  broker: embedded\n  format: avro\n  subject_strategy: topic\n  schema_compatibility: NONE'))).toEqual([]);
    expect(problems(base('  format: xml\n  schema_compatibility: SOMETIMES\n  schema_registry_url: not a url'))).toHaveLength(3);
  });
});
