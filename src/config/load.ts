import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import type { ZodIssue } from 'zod';
import { ConfigError } from '../core/errors.js';
import { coerceSubstituted, interpolate } from './interpolate.js';
import { configSchema, type SynclineConfig } from './schema.js';
import { slotOf } from './slot.js';

/** Environment variables that supply connection details when the file does not. */
const ENV_FALLBACKS = {
  sourceUrl: 'SYNCLINE_SOURCE_URL',
  sinkUrl: 'SYNCLINE_SINK_URL',
  streamBrokers: 'SYNCLINE_STREAM_BROKERS',
  streamUrl: 'SYNCLINE_STREAM_URL',
  schemaRegistryUrl: 'SYNCLINE_SCHEMA_REGISTRY_URL',
  deadLetterUrl: 'SYNCLINE_DEAD_LETTER_URL',
  dashboardToken: 'SYNCLINE_DASHBOARD_TOKEN',
} as const;

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): SynclineConfig {
  return validateConfig(readConfigDocument(file), env);
}

/** A config file's YAML as a plain object, not validated yet (the demo lays its own settings over it). */
export function readConfigDocument(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`]);
  }
  return parseYaml(text);
}

/** Parses YAML text, interpolates the environment and validates; every problem is reported at once. */
export function parseConfig(text: string, env: NodeJS.ProcessEnv = process.env): SynclineConfig {
  return validateConfig(parseYaml(text), env);
}

function parseYaml(text: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => `YAML syntax (line ${e.linePos?.[0]?.line ?? '?'}): ${e.message.split('\n')[0] ?? ''}`));
  }
  return doc.toJS();
}

/**
 * Validates a config given as a plain object of the YAML's shape (`${VAR}` interpolated as in
 * a file, defaults filled in, environment fallbacks applied); every problem is reported at
 * once, with its path. An already validated config passes unchanged.
 */
export function validateConfig(raw: unknown, env: NodeJS.ProcessEnv = process.env): SynclineConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(['(root): expected a mapping with sections source, stream, consumer, sink, dead_letter, monitoring']);
  }
  const problems: string[] = [];
  const substituted = new Set<string>();
  const interpolated = interpolate(raw, env, '', problems, substituted);
  let parsed = configSchema.safeParse(interpolated);
  if (!parsed.success && coerceSubstitutedValues(interpolated, parsed.error.issues, substituted)) parsed = configSchema.safeParse(interpolated);
  if (!parsed.success) problems.push(...parsed.error.issues.flatMap(formatIssue));
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);
  return applyEnvFallbacks(parsed.data, env);
}

/**
 * Where the schema wants a number or a boolean and got a string that came from `${VAR}`,
 * puts in the value the string spells (in place, in the interpolated copy). True if any.
 */
function coerceSubstitutedValues(config: unknown, issues: ZodIssue[], substituted: Set<string>): boolean {
  let changed = false;
  for (const issue of issues) {
    if (issue.code !== 'invalid_type' || issue.received !== 'string' || (issue.expected !== 'number' && issue.expected !== 'boolean')) continue;
    if (!substituted.has(formatPath(issue.path)) || issue.path.length === 0) continue;
    let parent: unknown = config;
    for (const key of issue.path.slice(0, -1)) parent = parent !== null && typeof parent === 'object' ? (parent as Record<string | number, unknown>)[key] : undefined;
    if (parent === null || typeof parent !== 'object') continue;
    const container = parent as Record<string | number, unknown>;
    const last = issue.path[issue.path.length - 1] as string | number;
    const text = container[last];
    const value = typeof text === 'string' ? coerceSubstituted(text, issue.expected) : undefined;
    if (value === undefined) continue;
    container[last] = value;
    changed = true;
  }
  return changed;
}

/** `a.b[0].c`: the path notation of every message (and of `interpolate`). */
function formatPath(path: (string | number)[]): string {
  return path.map((p) => (typeof p === 'number' ? `[${p}]` : p)).join('.').replace(/\.\[/g, '[');
}

/** One message per problem; an unknown key is named at its own path (`stream.partitons`), so a typo is found by its full path. */
function formatIssue(issue: ZodIssue): string[] {
  if (issue.code === 'unrecognized_keys') return issue.keys.map((key) => `${formatPath([...issue.path, key])}: unknown key`);
  return [`${formatPath(issue.path) || '(root)'}: ${issue.message}`];
}

function applyEnvFallbacks(config: SynclineConfig, env: NodeJS.ProcessEnv): SynclineConfig {
  const pick = (name: string): string | undefined => (env[name] ? env[name] : undefined);
  const brokers = pick(ENV_FALLBACKS.streamBrokers);
  return {
    ...config,
    source: { ...config.source, url: config.source.url ?? pick(ENV_FALLBACKS.sourceUrl) },
    stream: {
      ...config.stream,
      brokers: config.stream.brokers ?? (brokers ? brokers.split(',').map((b) => b.trim()) : undefined),
      url: config.stream.url ?? pick(ENV_FALLBACKS.streamUrl),
      schema_registry_url: config.stream.schema_registry_url ?? pick(ENV_FALLBACKS.schemaRegistryUrl),
    },
    sink: { ...config.sink, url: config.sink.url ?? pick(ENV_FALLBACKS.sinkUrl) },
    dead_letter: { ...config.dead_letter, url: config.dead_letter.url ?? pick(ENV_FALLBACKS.deadLetterUrl) },
    monitoring: { ...config.monitoring, dashboard_token: config.monitoring.dashboard_token ?? pick(ENV_FALLBACKS.dashboardToken) },
  };
}

/** The name written into change events as `source`. */
export function sourceNameOf(config: SynclineConfig): string {
  return config.source.name ?? slotOf(config).name;
}
