import { afterAll, beforeAll } from 'vitest';
import { dropBrokerTopic } from '../helpers/broker-topics.js';
import { requireListening } from './broker-check.js';

export const NATS_URL = 'nats://127.0.0.1:4222';

/**
 * For a NATS test file: checks before its tests that the machine's NATS server answers
 * (`what` names the test in the message), and deletes after them the streams and positions
 * bucket of every topic pushed onto the returned list (partitions 0..partitions-1).
 */
export function natsTopicsOfThisFile(what: string, partitions: number): string[] {
  const created: string[] = [];
  beforeAll(async () => {
    await requireListening('127.0.0.1', 4222, `${what} needs nats-server with JetStream on 127.0.0.1:4222 (see test/contract/nats.contract.test.ts)`);
  });
  afterAll(async () => {
    for (const topic of created) await dropBrokerTopic('nats', topic, partitions);
  });
  return created;
}
