import { describe, expect, it } from 'vitest';
import { deliveryPosition } from '../../src/stream/nats/ack-subject.js';

describe('NATS ack subject (deliveryPosition)', () => {
  it('reads the stream sequence and store time of the current format', () => {
    expect(deliveryPosition('$JS.ACK._.ACCHASH.t_p0.grp.1.4711.12.1764900000123456789.5.tok')).toEqual({ seq: 4711, timestampMs: 1764900000123 });
    expect(deliveryPosition('$JS.ACK.dom.ACCHASH.t_p0.grp.3.8.2.1764900000123456789.0')).toEqual({ seq: 8, timestampMs: 1764900000123 });
  });

  it('reads the older 9-token format', () => {
    expect(deliveryPosition('$JS.ACK.t_p1.grp.1.42.42.1764900000999000000.0')).toEqual({ seq: 42, timestampMs: 1764900000999 });
  });

  it('refuses what is not an ack subject', () => {
    expect(deliveryPosition('')).toBeNull();
    expect(deliveryPosition('_INBOX.abc.def')).toBeNull();
    expect(deliveryPosition('$JS.ACK.a.b.c')).toBeNull();
    expect(deliveryPosition('$JS.ACK.t_p1.grp.1.x.42.1764900000999000000.0')).toBeNull();
  });
});
