import type { z } from 'zod';
import { loadConfigFile, validateConfig } from '../config/load.js';
import type { configSchema, SynclineConfig } from '../config/schema.js';

/**
 * A configuration written as a plain object: the YAML file's shape (sections `source`,
 * `stream`, `consumer`, `sink`, `dead_letter`, `monitoring`), defaults optional.
 */
export type SynclineConfigInput = z.input<typeof configSchema>;

const validated = new WeakSet<object>();

/**
 * Reads, interpolates (`${VAR}`, `${VAR:-default}`) and validates a YAML config file, as
 * the CLI does. Throws a ConfigError listing every problem with its path.
 */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): SynclineConfig {
  return remember(loadConfigFile(path, env));
}

/**
 * Validates a config given as a plain object (see SynclineConfigInput): defaults filled in,
 * `${VAR}` interpolated, `SYNCLINE_*_URL` environment fallbacks applied. Throws a
 * ConfigError listing every problem with its path, e.g. `sink.type: Invalid enum value`.
 */
export function defineConfig(config: SynclineConfigInput, env: NodeJS.ProcessEnv = process.env): SynclineConfig {
  return remember(validateConfig(config, env));
}

/** True for a config this module validated (createPipeline does not validate it twice). */
export function isValidatedConfig(config: unknown): config is SynclineConfig {
  return typeof config === 'object' && config !== null && validated.has(config);
}

function remember(config: SynclineConfig): SynclineConfig {
  validated.add(config);
  return config;
}
