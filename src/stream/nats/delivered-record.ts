import type { Msg } from 'nats';
import type { StreamRecord } from '../stream.js';
import { deliveredKey } from './delivered-key.js';

/**
 * A record read from a partition's stream. Its key is read from the message's headers only
 * when asked for: apply takes a change from the record's value and never asks, and reading
 * it for every record cost about a microsecond each (a string of the header block, a search,
 * a slice) on the NATS reader's one thread.
 */
export class DeliveredRecord implements StreamRecord {
  deliveries?: number;

  constructor(
    readonly partition: number,
    readonly offset: bigint,
    readonly value: Buffer,
    readonly timestamp: number,
    private readonly msg: Msg,
  ) {}

  get key(): string {
    return deliveredKey(this.msg);
  }
}
