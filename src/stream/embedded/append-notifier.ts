/**
 * In-process append notifications, one per resolved stream path and shared by every stream
 * instance opened on it. `seq` lets a consumer notice an append that happened between its
 * last read and the start of its wait.
 */
import { EventEmitter } from 'node:events';

export interface Notifier {
  emitter: EventEmitter;
  seq: number;
  refs: number;
}

const notifiers = new Map<string, Notifier>();

export function acquireNotifier(key: string): Notifier {
  let n = notifiers.get(key);
  if (n === undefined) {
    const emitter = new EventEmitter();
    emitter.setMaxListeners(0); // one listener per waiting consumer, unbounded by design
    n = { emitter, seq: 0, refs: 0 };
    notifiers.set(key, n);
  }
  n.refs++;
  return n;
}

export function releaseNotifier(key: string, n: Notifier): void {
  if (--n.refs === 0 && notifiers.get(key) === n) notifiers.delete(key);
}

export function notifyAppend(n: Notifier): void {
  n.seq++;
  n.emitter.emit('append');
}
