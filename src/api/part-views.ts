import type { DeadLetter, DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import type { Sink } from '../sink/sink.js';
import type { Stream } from '../stream/stream.js';

/*
 * Views a pipeline puts around its parts to observe them: the same interface, one hook more.
 */

/** The stream, telling when apply's consumer is open (apply has prepared the sink by then). */
export function watchConsumer(stream: Stream, onConsumer: () => void): Stream {
  return {
    partitions: stream.partitions,
    producer: () => stream.producer(),
    consumer: async (group, options) => {
      const consumer = await stream.consumer(group, options);
      onConsumer();
      return consumer;
    },
    endOffsets: () => stream.endOffsets(),
    offsetsForTime: (t) => stream.offsetsForTime(t),
    close: () => stream.close(),
  };
}

/** A view of a sink whose close() leaves it open (its owner closes it). */
export function unowned(sink: Sink): Sink {
  return {
    storesPositions: sink.storesPositions,
    prepare: () => sink.prepare(),
    apply: (c, p, g) => sink.apply(c, p, g),
    positions: (g) => sink.positions(g),
    close: async () => undefined,
  };
}

/** The dead-letter queue, telling which letters it stored (after they were stored). */
export function observedDeadLetters(queue: DeadLetterQueue, onAdded: (letters: readonly DeadLetter[]) => void): DeadLetterQueue {
  return {
    prepare: () => queue.prepare(),
    add: async (letters) => {
      await queue.add(letters);
      onAdded(letters);
    },
    list: (f) => queue.list(f),
    remove: (ids) => queue.remove(ids),
    recordFailure: (id, e, code) => queue.recordFailure(id, e, code),
    depth: () => queue.depth(),
    blockedRows: () => queue.blockedRows(),
    orphans: (limit) => queue.orphans(limit),
    close: () => queue.close(),
  };
}
