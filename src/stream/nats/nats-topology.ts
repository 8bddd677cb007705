/**
 * Creates the JetStream streams of a topic, one per partition, and checks that existing ones
 * were made for the same partition count (recorded in each stream's description).
 *
 * Offsets: one stream per partition makes the mapping exact and stateless:
 * offset = stream sequence - 1 (JetStream sequences start at 1 and grow by one per stored
 * message; deduplicated publishes do not take a sequence). Retention (`max_age`) removes
 * from the front only, so offsets of retained records never change.
 */
import { DiscardPolicy, RetentionPolicy, StorageType, nanos, type JetStreamManager } from 'nats';
import { DEFAULT_RETENTION_HOURS } from '../common/broker-stream.js';
import { partitionsMismatchError } from '../common/errors.js';
import { JS_STREAM_NOT_FOUND, apiErrorCode } from './nats-errors.js';
import { natsName, partitionStreamName, partitionSubject } from './nats-names.js';

const DUPLICATE_WINDOW_MS = 120_000;

export interface TopologyOptions {
  topic: string;
  partitions: number;
  retentionHours?: number;
}

export async function ensureStreams(jsm: JetStreamManager, opts: TopologyOptions): Promise<void> {
  const n = opts.partitions;
  const maxAgeMs = Math.round((opts.retentionHours ?? DEFAULT_RETENTION_HOURS) * 3_600_000);
  const description = (p: number): string => `syncline topic ${opts.topic} partition ${p} of ${n}`;
  const check = (p: number, desc: string | undefined): void => {
    const m = desc === undefined ? null : / of (\d+)$/.exec(desc);
    const had = m?.[1] === undefined ? undefined : Number(m[1]);
    if (had !== undefined && had !== n) {
      throw partitionsMismatchError(
        `NATS stream ${partitionStreamName(opts.topic, p)} was created for ${had} partitions`,
        n,
        `set stream.partitions back to ${had}, or use another stream.topic`,
      );
    }
  };
  for (let p = 0; p < n; p++) {
    const name = partitionStreamName(opts.topic, p);
    // `<topic>.<p>.<schema>.<table>`; the bare `<topic>.<p>` of streams made before subjects per table.
    const subjects = [partitionSubject(opts.topic, p), `${natsName(opts.topic)}.${p}.>`];
    try {
      const info = await jsm.streams.info(name);
      check(p, info.config.description);
      if (!subjects.every((x) => info.config.subjects.includes(x))) {
        await jsm.streams.update(name, { ...info.config, subjects: [...new Set([...info.config.subjects, ...subjects])] });
      }
      continue;
    } catch (err) {
      if (apiErrorCode(err) !== JS_STREAM_NOT_FOUND) throw err;
    }
    try {
      await jsm.streams.add({
        name,
        subjects,
        description: description(p),
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        num_replicas: 1,
        max_age: nanos(maxAgeMs),
        duplicate_window: nanos(Math.min(DUPLICATE_WINDOW_MS, maxAgeMs)),
      });
    } catch (err) {
      // Created meanwhile by another process: accept it if it matches.
      check(p, (await jsm.streams.info(name).catch(() => Promise.reject(err))).config.description);
    }
  }
  // A stream past the configured count means the topic had more partitions.
  try {
    const extra = await jsm.streams.info(partitionStreamName(opts.topic, n));
    check(n, extra.config.description ?? `of ${n + 1}`);
  } catch (err) {
    if (apiErrorCode(err) !== JS_STREAM_NOT_FOUND) throw err;
  }
}
