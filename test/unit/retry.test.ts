import { describe, expect, it } from 'vitest';
import type { Clock } from '../../src/core/clock.js';
import { SynclineError } from '../../src/core/errors.js';
import { backoffDelay, retry, STOPPED, type RetryAttempt } from '../../src/core/retry.js';

const policy = { maxAttempts: 3, baseMs: 100, maxMs: 1000, jitter: false };
const transient = (): SynclineError => new SynclineError('T', 'transient', { retriable: true });

/** A clock whose sleeps only record their length (and see the signal). */
function fakeClock(onSleep?: () => void): Clock & { slept: number[] } {
  const slept: number[] = [];
  return { slept, now: () => 0, sleep: async (ms) => void (slept.push(ms), onSleep?.()) };
}

describe('retry', () => {
  it('waits the backoff delays between attempts and returns the first success', async () => {
    const clock = fakeClock();
    const seen: RetryAttempt[] = [];
    let calls = 0;
    const result = await retry(async () => (++calls < 3 ? Promise.reject(transient()) : 'ok'), policy, { clock, onRetry: (a) => seen.push(a) });
    expect(result).toBe('ok');
    expect(clock.slept).toEqual([100, 200]);
    expect(seen.map((a) => a.attempt)).toEqual([1, 2]);
  });

  it('throws permanent failures at once, and the last one after maxAttempts', async () => {
    const clock = fakeClock();
    await expect(retry(() => Promise.reject(new Error('permanent')), policy, { clock })).rejects.toThrow('permanent');
    expect(clock.slept).toEqual([]);
    await expect(retry(() => Promise.reject(transient()), policy, { clock })).rejects.toThrow('transient');
    expect(clock.slept).toEqual([100, 200]);
  });

  it('untilStopped keeps trying at maxMs and returns STOPPED once the signal aborts', async () => {
    const stop = new AbortController();
    const clock = fakeClock(() => clock.slept.length === 6 && stop.abort());
    const result = await retry(() => Promise.reject(transient()), policy, { clock, signal: stop.signal, untilStopped: true });
    expect(result).toBe(STOPPED);
    expect(clock.slept).toEqual([100, 200, 1000, 1000, 1000, 1000]);
  });

  it('keeps the full-jitter formula: uniform below min(max, base * 2^(attempt-1))', () => {
    expect(backoffDelay({ ...policy, jitter: true }, 3, () => 0.5)).toBe(200);
    expect(backoffDelay({ ...policy, jitter: true }, 10, () => 0.999)).toBe(999);
  });
});
