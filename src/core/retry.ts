import { systemClock, type Clock } from './clock.js';
import { isRetriable } from './errors.js';

/** Exponential backoff with full jitter: delay is uniform in [0, min(max, base * 2^attempt)). */
export interface RetryPolicy {
  maxAttempts: number;
  baseMs: number;
  maxMs: number;
  jitter: boolean;
}

export function backoffDelay(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, attempt - 1));
  return policy.jitter ? Math.floor(random() * ceiling) : ceiling;
}

/** What `retry` returns when its signal aborted while it waited (distinct from any result, even undefined). */
export const STOPPED: unique symbol = Symbol('stopped');

/** One failed attempt that will be tried again. */
export interface RetryAttempt {
  /** 1 for the first failure. */
  attempt: number;
  delayMs: number;
  error: unknown;
}

export interface RetryOptions {
  /** Stops the waiting between attempts: `retry` then returns STOPPED. */
  signal?: AbortSignal;
  /** Default: the system clock. */
  clock?: Clock;
  /** Which failures are worth another attempt. Default: `isRetriable` (unknown errors are permanent). */
  retriable?: (err: unknown) => boolean;
  /**
   * After `maxAttempts` failures, keep trying at `maxMs` until the signal aborts instead of
   * giving up: an outage must stall the pipeline, never drop changes.
   */
  untilStopped?: boolean;
  /** Called before each wait (to count or log the retry). */
  onRetry?: (attempt: RetryAttempt) => void;
  /**
   * An attempt that ran at least this long before failing counts as the first failure
   * again: a session that was healthy for a while starts the backoff afresh (restart loops).
   */
  healthyAfterMs?: number;
  /**
   * Waits out a backoff delay in place of `clock.sleep`, and may end it early (capture ends
   * it once its source answers again: see `sleepUntilBack`). Must return when the signal aborts.
   */
  wait?: (delayMs: number, signal: AbortSignal | undefined) => Promise<void>;
}

/**
 * Calls `fn` until it succeeds. A failure that is not retriable, or the last of
 * `policy.maxAttempts` (unless `untilStopped`), is thrown; between attempts it waits
 * `backoffDelay`, and returns STOPPED if the signal aborts meanwhile.
 */
export function retry<T>(fn: (attempt: number) => Promise<T>, policy: RetryPolicy, options: RetryOptions & { signal: AbortSignal }): Promise<T | typeof STOPPED>;
/** Without a signal nothing stops the waiting: the result, or the error. */
export function retry<T>(fn: (attempt: number) => Promise<T>, policy: RetryPolicy, options?: Omit<RetryOptions, 'signal'>): Promise<T>;
export async function retry<T>(fn: (attempt: number) => Promise<T>, policy: RetryPolicy, options: RetryOptions = {}): Promise<T | typeof STOPPED> {
  const { signal, clock = systemClock, retriable = isRetriable } = options;
  for (let attempt = 1; ; attempt++) {
    const began = clock.now();
    try {
      return await fn(attempt);
    } catch (error) {
      if (!retriable(error)) throw error;
      if (options.healthyAfterMs !== undefined && clock.now() - began >= options.healthyAfterMs) attempt = 1;
      if (attempt >= policy.maxAttempts && !options.untilStopped) throw error;
      const delayMs = attempt < policy.maxAttempts ? backoffDelay(policy, attempt) : policy.maxMs;
      options.onRetry?.({ attempt, delayMs, error });
      await (options.wait ?? clock.sleep)(delayMs, signal);
      if (signal?.aborted) return STOPPED;
    }
  }
}

/**
 * A backoff wait that ends as soon as a dependency that was down answers again. `answers` is
 * asked when the wait begins: if the dependency answers then, the failure lies elsewhere and
 * the whole delay is waited. If not, it is asked again every `intervalMs`, and the first
 * answer ends the wait. So after a short outage of the dependency (a database restarting) the
 * client starts again about `intervalMs` after its return, rather than up to the policy's
 * `maxMs` later, and while it is down the dependency sees one cheap probe per interval, never
 * more. Waits of at most `intervalMs` are plain sleeps. Resolves true when it ended early.
 */
export async function sleepUntilBack(
  delayMs: number,
  answers: () => Promise<boolean>,
  options: { intervalMs: number; clock?: Clock; signal?: AbortSignal },
): Promise<boolean> {
  const { intervalMs, clock = systemClock, signal } = options;
  if (delayMs <= intervalMs) {
    await clock.sleep(delayMs, signal);
    return false;
  }
  const until = clock.now() + delayMs;
  if (await answers()) {
    await clock.sleep(Math.max(0, until - clock.now()), signal);
    return false;
  }
  for (;;) {
    const left = until - clock.now();
    if (left <= 0 || signal?.aborted) return false;
    await clock.sleep(Math.min(intervalMs, left), signal);
    if (signal?.aborted || clock.now() >= until) return false;
    if (await answers()) return true;
  }
}
