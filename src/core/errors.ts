/**
 * The one error base class of syncline. Every error says whether retrying the same
 * operation may succeed; unknown errors (not a SynclineError) are treated as permanent.
 */
export class SynclineError extends Error {
  readonly retriable: boolean;
  readonly code: string;

  constructor(code: string, message: string, options: { retriable: boolean; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SynclineError';
    this.code = code;
    this.retriable = options.retriable;
  }
}

/** A configuration problem; `issues` lists every problem with its path. */
export class ConfigError extends SynclineError {
  readonly issues: readonly string[];
  constructor(issues: readonly string[]) {
    super('CONFIG_INVALID', `invalid configuration:\n  - ${issues.join('\n  - ')}`, { retriable: false });
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/**
 * The command line asks for something the command refuses (a purge without a filter, init
 * over an existing file): exit 2 like commander's own usage errors, code `USAGE` in --json.
 */
export class UsageError extends SynclineError {
  constructor(message: string) {
    super('USAGE', message, { retriable: false });
    this.name = 'UsageError';
  }
}

/** The wire data broke the protocol grammar: the bytes cannot be trusted. */
export class ProtocolError extends SynclineError {
  constructor(message: string) {
    super('PROTOCOL', message, { retriable: false });
    this.name = 'ProtocolError';
  }
}

/** A prerequisite on a server is missing (wal_level, publication, privileges...). */
export class PrerequisiteError extends SynclineError {
  /** What is wrong, without the fix. */
  readonly detail: string;
  readonly fix: string;
  constructor(message: string, fix: string) {
    super('PREREQUISITE', `${message}\n  fix: ${fix}`, { retriable: false });
    this.name = 'PrerequisiteError';
    this.detail = message;
    this.fix = fix;
  }
}

/**
 * One table's target does not fit its changes (missing table or column, another key): every
 * change of that table would fail the same way, and no other table's. Apply holds that
 * table's changes, in order, until it is fixed, while the other tables keep flowing.
 */
export class StructuralError extends PrerequisiteError {
  /** `schema.table` as the changes name it (the source table). */
  readonly table: string;
  constructor(table: string, message: string, fix: string) {
    super(message, fix);
    this.name = 'StructuralError';
    this.table = table;
  }
}

export function isRetriable(err: unknown): boolean {
  return err instanceof SynclineError && err.retriable;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
