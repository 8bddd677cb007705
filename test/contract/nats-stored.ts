import type { NatsConnection } from 'nats';
import { partitionStreamName } from '../../src/stream/nats/nats-names.js';

/**
 * The payloads stored in partition stream `partition` of `topic`, in stream order, read
 * message by message from the server (not through syncline's consumer), trailing `.`
 * padding removed: what a producer test checks its records against.
 */
export async function storedValues(nc: NatsConnection, topic: string, partition = 0): Promise<string[]> {
  const jsm = await nc.jetstreamManager();
  const name = partitionStreamName(topic, partition);
  const { state } = await jsm.streams.info(name);
  const out: string[] = [];
  for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) out.push(new TextDecoder().decode((await jsm.streams.getMessage(name, { seq })).data).replace(/\.+$/, ''));
  return out;
}
