import pino from 'pino';
import { redactUrl } from '../core/redact.js';

export type Logger = pino.Logger;

/**
 * Structured JSON logs on stderr (stdout stays free for command output and progress).
 * Secrets are removed twice: known keys by pino's redaction, and passwords inside
 * connection URLs in any logged string.
 */
export function createLogger(level: string = process.env.SYNCLINE_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      level,
      base: { app: 'syncline' },
      redact: { paths: ['password', '*.password', 'token', '*.token', 'connectionString', '*.connectionString'], censor: '***' },
      hooks: {
        logMethod(args, method) {
          method.apply(this, args.map((a) => (typeof a === 'string' ? redactUrl(a) : a)) as Parameters<typeof method>);
        },
      },
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: 2, sync: false }),
  );
}

/** A logger that drops everything (library use and tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
