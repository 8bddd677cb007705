import { InvalidArgumentError, Option } from 'commander';
import { parseDuration } from '../../core/duration.js';

/** `-c, --config FILE`, shared by every command that reads a configuration. */
export const configOption = (): Option => new Option('-c, --config <file>', 'configuration file (YAML)').default('syncline.yaml');

/**
 * How every command's table arguments read (core/table-arg.ts): as syncline prints tables, or
 * in SQL; said the same way in each command's help.
 */
export const TABLE_ARG_HELP = 'as printed (schema.table; a bare table is in schema public) or as SQL ("My Schema"."Order Items")';

/**
 * Option argument checks: a bad value is a usage error that commander reports with the
 * option's name (exit 2, like every usage error) before the command opens a connection,
 * instead of surfacing later as an SQL error or a crash. They return the text unchanged.
 */
export function positiveIntegerArg(value: string): string {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer.');
  return value;
}

export function portArg(value: string): string {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || n > 65535) throw new InvalidArgumentError('expected a port number (0-65535).');
  return value;
}

export function durationArg(value: string): string {
  try {
    parseDuration(value);
  } catch {
    throw new InvalidArgumentError('expected a duration such as 20s, 5m, 1h or 500ms.');
  }
  return value;
}
