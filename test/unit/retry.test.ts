import { describe, expect, it } from 'vitest';
import type { Clock } from '../../src/core/clock.js';
import { SynclineError } from '../../src/core/errors.js';
import { backoffDelay, retry, sleepUntilBack, STOPPED, type RetryAttempt } from '../../src/core/retry.js';

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

/** A clock whose sleeps advance its time at once. */
function steppingClock(): Clock & { slept: number[] } {
  let t = 0;
  const slept: number[] = [];
  return { slept, now: () => t, sleep: async (ms) => void (slept.push(ms), (t += ms)) };
}

describe('sleepUntilBack', () => {
  const intervalMs = 1000;

  it('ends a long wait at the first probe that answers after the dependency was down', async () => {
    const clock = steppingClock();
    const probes: number[] = [];
    // Down when the wait begins and for 4.5 s; answers from then on.
    const answers = async (): Promise<boolean> => (probes.push(clock.now()), clock.now() >= 4500);
    expect(await sleepUntilBack(30_000, answers, { intervalMs, clock })).toBe(true);
    expect(probes).toEqual([0, 1000, 2000, 3000, 4000, 5000]);
    expect(clock.now()).toBe(5000);
  });

  it('waits the whole delay when the dependency answers as the wait begins (the failure lies elsewhere)', async () => {
    const clock = steppingClock();
    let probes = 0;
    expect(await sleepUntilBack(30_000, async () => (probes++, true), { intervalMs, clock })).toBe(false);
    expect(probes).toBe(1);
    expect(clock.now()).toBe(30_000);
  });

  it('waits no longer than the delay while the dependency stays down, probing once per interval', async () => {
    const clock = steppingClock();
    let probes = 0;
    expect(await sleepUntilBack(3500, async () => (probes++, false), { intervalMs, clock })).toBe(false);
    expect(clock.slept).toEqual([1000, 1000, 1000, 500]);
    expect(probes).toBe(4);
    expect(clock.now()).toBe(3500);
  });

  it('sleeps plainly for a wait of at most one interval, and stops when the signal aborts', async () => {
    const clock = steppingClock();
    let probes = 0;
    const answers = async (): Promise<boolean> => (probes++, false);
    expect(await sleepUntilBack(800, answers, { intervalMs, clock })).toBe(false);
    expect(probes).toBe(0);
    const stop = new AbortController();
    const stopping = steppingClock();
    const stopAt2 = async (): Promise<boolean> => {
      if (stopping.now() >= 2000) stop.abort();
      return false;
    };
    expect(await sleepUntilBack(30_000, stopAt2, { intervalMs, clock: stopping, signal: stop.signal })).toBe(false);
    expect(stopping.now()).toBe(2000);
  });

  it('is how retry waits when given as its wait', async () => {
    const clock = steppingClock();
    let calls = 0;
    let back = 0;
    const result = await retry(async () => (++calls < 3 ? Promise.reject(transient()) : 'ok'), { ...policy, maxAttempts: 2, maxMs: 30_000 }, {
      clock,
      untilStopped: true,
      wait: async (delayMs, signal) => void (back += Number(await sleepUntilBack(delayMs, async () => clock.now() >= 2500, { intervalMs, clock, signal }))),
    });
    expect(result).toBe('ok');
    // 100 ms after the first failure, then the 30 s wait ended after 3 s: the third probe answered.
    expect(clock.now()).toBe(100 + 3000);
    expect(back).toBe(1);
  });
});
