#!/usr/bin/env node
import { Command } from 'commander';
import { ConfigError, SynclineError, UsageError, errorMessage } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';
import { registerDemo } from './commands/demo.js';
import { registerDoctor } from './commands/doctor.js';
import { registerDlq } from './commands/dlq.js';
import { registerConflicts } from './commands/conflicts.js';
import { registerRepair } from './commands/repair.js';
import { registerResync } from './commands/resync.js';
import { registerSnapshot } from './commands/snapshot.js';
import { registerInit } from './commands/init.js';
import { registerMonitoring } from './commands/monitoring.js';
import { registerRun } from './commands/run.js';
import { registerSchemas } from './commands/schemas.js';
import { registerStatus } from './commands/status.js';
import { registerValidate } from './commands/validate.js';
import { registerVerify } from './commands/verify.js';
import { EXIT } from './exit-codes.js';
import { loadPg } from './load-pg.js';

// A reader that closed the pipe early (`syncline dlq list | head`): the rest of the output is
// dropped and the command ends with its own exit code. Without a listener every such write
// crashed the process with an unhandled EPIPE and a Node stack trace.
for (const out of [process.stdout, process.stderr]) {
  out.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
  });
}

/** Something went to stdout (a command's report): a failure after it adds no JSON of its own. */
let wroteStdout = false;
const writeStdout = process.stdout.write.bind(process.stdout) as (...args: unknown[]) => boolean;
process.stdout.write = ((...args: unknown[]) => {
  wroteStdout = true;
  return writeStdout(...args);
}) as typeof process.stdout.write;

const program = new Command();
program
  .name('syncline')
  .description('Log-based change data capture and sync for PostgreSQL')
  .version('0.1.0')
  .showHelpAfterError()
  // Usage errors (unknown command or option, a missing or invalid option argument) are exit
  // 2 like an invalid configuration; commander's own default is 1, which for `verify` means
  // drift. --help and --version stay 0. Subcommands inherit this when they are created.
  .exitOverride((err) => {
    // A script that asked for --json parses stdout: a usage error (commander printed it on
    // stderr) is there as JSON too, like every other failure, instead of an empty stdout.
    if (err.exitCode !== 0 && process.argv.includes('--json') && !wroteStdout) {
      process.stdout.write(`${JSON.stringify({ error: { message: err.message.replace(/^error: /, ''), code: 'USAGE' } })}\n`);
    }
    process.exit(err.exitCode === 0 ? EXIT.OK : EXIT.CONFIG);
  });

// One line per command module; each file owns its options and output. A command module
// imports only what declaring its options needs, and its implementation (config loading,
// database clients, the pipeline) inside its action: every process pays for the commands it
// does not run otherwise (--version took 0.6 s of CPU when all were loaded up front).
registerInit(program);
registerValidate(program);
registerRun(program);
registerVerify(program);
registerDemo(program);
registerDoctor(program);
registerStatus(program);
registerSchemas(program);
registerMonitoring(program);
registerDlq(program);
registerConflicts(program);
registerSnapshot(program);
registerRepair(program);
registerResync(program);

// Commands that talk to PostgreSQL load node-postgres first, the cheaper way (cli/load-pg.ts).
const WITHOUT_POSTGRES = new Set(['init', 'validate', 'monitoring']);
program.hook('preAction', async (_, action) => {
  let command = action;
  while (command.parent && command.parent !== program) command = command.parent;
  if (!WITHOUT_POSTGRES.has(command.name())) await loadPg();
});

program.parseAsync(process.argv).then(
  () => {
    // Pools and sockets are closed; exit even if a library left a handle behind.
    setTimeout(() => process.exit(process.exitCode ?? EXIT.OK), 100).unref();
  },
  (err: unknown) => {
    const message = redactUrl(errorMessage(err));
    process.stderr.write(`syncline: ${message}\n`);
    // A script that asked for --json reads stdout: it gets the failure there too, as JSON,
    // unless the command already printed its own report.
    if (process.argv.includes('--json') && !wroteStdout) {
      process.stdout.write(`${JSON.stringify({ error: { message, code: failureCode(err) } })}\n`);
    }
    // A command that already chose its failure code (verify: 2) keeps it.
    const code = err instanceof ConfigError || err instanceof UsageError ? EXIT.CONFIG : typeof process.exitCode === 'number' && process.exitCode !== 0 ? process.exitCode : EXIT.FAILURE;
    process.exit(code);
  },
);

/**
 * The `code` of a --json failure: syncline's own, else a server's SQLSTATE (`PG_3D000`: no
 * such database), else Node's system error (`ECONNREFUSED`), else `ERROR`: a script can
 * always branch on it.
 */
function failureCode(err: unknown): string {
  if (err instanceof SynclineError) return err.code;
  const { code, severity } = (err ?? {}) as { code?: unknown; severity?: unknown };
  // A server's error (pg's DatabaseError carries the severity too): EPIPE is five letters as well.
  if (typeof code === 'string' && typeof severity === 'string' && /^[0-9A-Z]{5}$/.test(code)) return `PG_${code}`;
  if (typeof code === 'string' && /^E[A-Z_]+$/.test(code)) return code;
  return 'ERROR';
}
