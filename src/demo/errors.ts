import { SynclineError } from '../core/errors.js';

/**
 * The demo could not run on this machine. Its message is one line that ends with the fix,
 * because the CLI prints it as is.
 */
export class DemoError extends SynclineError {
  readonly fix: string;
  constructor(problem: string, fix: string, cause?: unknown) {
    super('DEMO', `demo: ${problem}; fix: ${fix}`, { retriable: false, cause });
    this.name = 'DemoError';
    this.fix = fix;
  }
}
