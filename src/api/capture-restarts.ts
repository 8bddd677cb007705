import type { SynclineConfig } from '../config/schema.js';
import { systemClock } from '../core/clock.js';
import { errorMessage, isRetriable } from '../core/errors.js';
import { retry, sleepUntilBack } from '../core/retry.js';
import { isRetriablePgError } from '../core/sqlstate.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Stream } from '../stream/stream.js';
import { runCapture, type CaptureHooks } from '../compose/capture.js';
import { CaptureLag } from '../compose/capture-lag.js';
import { sourceAnswers, sourceWalPosition } from '../compose/source-connection.js';
import { streamAnswers } from '../compose/stream.js';

/** A capture session that ran this long before failing starts the backoff afresh. */
const CAPTURE_HEALTHY_MS = 60_000;

/** While the source or the broker does not answer, how often a restart's wait asks again (a plain connect). */
const PROBE_INTERVAL_MS = 1000;
/** How long one such probe may take to connect. */
const PROBE_TIMEOUT_MS = 2000;
/** While capture waits to start again, how often the source's WAL position is sampled for its lag. */
const LAG_SAMPLE_MS = 1000;

/**
 * Capture, started again after a failure that may pass (the broker or the source restarting,
 * a dropped connection) once it has streamed, with jittered backoff from `consumer.retry`. Nothing is lost by a
 * restart: the slot resumes from the position confirmed after the stream stored the changes,
 * and what is published twice is stale at the sink. Other failures (a missing publication,
 * wal_level) end the process with their fix.
 *
 * A wait for the next start ends early when the source and the broker are back: if either
 * does not accept a connection when the wait begins, both are asked again every second and
 * capture starts as soon as both do (sleepUntilBack). Without that, a restart of the source
 * or of the broker of 5-10 s reached the `backoff_max_ms` wait (30 s by default) and capture
 * resumed up to that long after it was back. The backoff still spaces the starts when both
 * answer (the failure is elsewhere: the slot, a broker that accepts connections but cannot
 * store yet), and a down server sees one connection attempt a second.
 */
export async function captureWithRestarts(
  config: SynclineConfig,
  stream: Stream,
  metrics: Metrics,
  log: Logger,
  signal: AbortSignal,
  hooks: Omit<CaptureHooks, 'onPrepared'> = {},
): Promise<void> {
  const r = config.consumer.retry;
  const policy = { maxAttempts: r.max_attempts, baseMs: Math.max(r.backoff_base_ms, 100), maxMs: Math.max(r.backoff_max_ms, 1000), jitter: r.jitter };
  // Until capture has once got past its prerequisites (publication, leadership, slot), a
  // failure (an unreachable source, a wrong password) is reported and ends the process: it is
  // a setup problem, not something that passes.
  let streamed = false;
  const passing = (err: unknown): boolean => isRetriable(err) || isRetriablePgError(err);
  const lag = new CaptureLag(metrics);
  try {
    await retry(
      () =>
        runCapture(config, stream, metrics, log, signal, {
          ...hooks,
          onPrepared: () => {
            streamed = true;
          },
          // Waiting as standby is past the prerequisites too (source, publication, state
          // tables): a connection lost meanwhile ended the process, and the HA pair its standby.
          onStandby: () => {
            streamed = true;
            hooks.onStandby?.();
          },
        }, lag),
      policy,
      {
        signal,
        clock: systemClock,
        untilStopped: true,
        healthyAfterMs: CAPTURE_HEALTHY_MS,
        wait: async (delayMs, waitSignal) => {
          const bothAnswer = async (): Promise<boolean> => (await Promise.all([sourceAnswers(config, PROBE_TIMEOUT_MS), streamAnswers(config, PROBE_TIMEOUT_MS)])).every((up) => up);
          const stopSampling = sampleLagWhileWaiting(config, lag);
          const back = await sleepUntilBack(delayMs, bothAnswer, { intervalMs: PROBE_INTERVAL_MS, clock: systemClock, signal: waitSignal }).finally(stopSampling);
          if (back) log.info({ backoffMs: delayMs }, 'the source and the stream answer again; starting capture now');
        },
        retriable: (err) => !signal.aborted && streamed && passing(err),
        onRetry: ({ attempt, delayMs, error }) => {
          metrics.retried.inc();
          log.warn({ err: errorMessage(error), attempt, delayMs }, 'capture failed; starting it again (nothing unpublished was confirmed to the source)');
        },
      },
    );
  } catch (err) {
    if (signal.aborted && streamed && passing(err)) {
      // Asked to stop while the stream or the source was away: what was not acknowledged
      // was never confirmed to the slot and is read again at the next start.
      log.warn({ err: errorMessage(err) }, 'capture stopped before the stream acknowledged everything; the rest is read again from the slot at the next start');
      return;
    }
    throw err;
  }
}

/**
 * While capture waits to start again, sync_capture_lag_seconds keeps growing: every second the
 * source's WAL position is sampled (where the source answers) and the gauge set from it and
 * the position capture last confirmed. Returns the function that stops it.
 */
function sampleLagWhileWaiting(config: SynclineConfig, lag: CaptureLag): () => void {
  let sampling = false;
  const timer = setInterval(() => {
    if (sampling) return; // a source slow to answer: the next tick samples
    sampling = true;
    void sourceWalPosition(config, PROBE_TIMEOUT_MS)
      .then((lsn) => {
        const now = systemClock.now();
        if (lsn !== undefined) lag.wal(now, lsn);
        else lag.update(now); // what was sampled before still ages
      })
      .finally(() => {
        sampling = false;
      });
  }, LAG_SAMPLE_MS);
  return () => clearInterval(timer);
}
