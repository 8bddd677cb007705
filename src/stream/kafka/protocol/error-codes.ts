/**
 * Kafka's broker error codes that the producer and the group clean-up can meet, as data: name and whether the same
 * request may succeed when sent again (after a metadata refresh or a backoff). Codes not in
 * the table are treated as permanent, as unknown errors are everywhere in syncline.
 */
export interface KafkaErrorCode {
  name: string;
  retriable: boolean;
}

const TABLE: Readonly<Record<number, KafkaErrorCode>> = {
  [-1]: { name: 'UNKNOWN_SERVER_ERROR', retriable: false },
  2: { name: 'CORRUPT_MESSAGE', retriable: true },
  3: { name: 'UNKNOWN_TOPIC_OR_PARTITION', retriable: true },
  5: { name: 'LEADER_NOT_AVAILABLE', retriable: true },
  6: { name: 'NOT_LEADER_OR_FOLLOWER', retriable: true },
  7: { name: 'REQUEST_TIMED_OUT', retriable: true },
  8: { name: 'BROKER_NOT_AVAILABLE', retriable: false },
  9: { name: 'REPLICA_NOT_AVAILABLE', retriable: true },
  10: { name: 'MESSAGE_TOO_LARGE', retriable: false },
  13: { name: 'NETWORK_EXCEPTION', retriable: true },
  14: { name: 'COORDINATOR_LOAD_IN_PROGRESS', retriable: true },
  15: { name: 'COORDINATOR_NOT_AVAILABLE', retriable: true },
  16: { name: 'NOT_COORDINATOR', retriable: true },
  17: { name: 'INVALID_TOPIC_EXCEPTION', retriable: false },
  18: { name: 'RECORD_LIST_TOO_LARGE', retriable: false },
  19: { name: 'NOT_ENOUGH_REPLICAS', retriable: true },
  20: { name: 'NOT_ENOUGH_REPLICAS_AFTER_APPEND', retriable: true },
  21: { name: 'INVALID_REQUIRED_ACKS', retriable: false },
  24: { name: 'INVALID_GROUP_ID', retriable: false },
  25: { name: 'UNKNOWN_MEMBER_ID', retriable: false },
  29: { name: 'TOPIC_AUTHORIZATION_FAILED', retriable: false },
  30: { name: 'GROUP_AUTHORIZATION_FAILED', retriable: false },
  31: { name: 'CLUSTER_AUTHORIZATION_FAILED', retriable: false },
  32: { name: 'INVALID_TIMESTAMP', retriable: false },
  35: { name: 'UNSUPPORTED_VERSION', retriable: false },
  42: { name: 'INVALID_REQUEST', retriable: false },
  43: { name: 'UNSUPPORTED_FOR_MESSAGE_FORMAT', retriable: false },
  44: { name: 'POLICY_VIOLATION', retriable: false },
  45: { name: 'OUT_OF_ORDER_SEQUENCE_NUMBER', retriable: false },
  46: { name: 'DUPLICATE_SEQUENCE_NUMBER', retriable: false },
  47: { name: 'INVALID_PRODUCER_EPOCH', retriable: false },
  56: { name: 'KAFKA_STORAGE_ERROR', retriable: true },
  59: { name: 'UNKNOWN_PRODUCER_ID', retriable: false },
  74: { name: 'FENCED_LEADER_EPOCH', retriable: true },
  75: { name: 'UNKNOWN_LEADER_EPOCH', retriable: true },
  87: { name: 'INVALID_RECORD', retriable: false },
  89: { name: 'THROTTLING_QUOTA_EXCEEDED', retriable: true },
};

export const NONE = 0;
export const DUPLICATE_SEQUENCE_NUMBER = 46;
export const UNKNOWN_MEMBER_ID = 25;
/**
 * The producer's idempotence state no longer matches the broker's (sequence gap, producer id
 * expired or fenced). This producer cannot go on, but a new one can: capture restarts with a
 * new producer id, from the slot's confirmed position.
 */
/** The batch (MESSAGE_TOO_LARGE) or request's records (RECORD_LIST_TOO_LARGE) over the broker's or topic's limit. */
export const TOO_LARGE_ERRORS: ReadonlySet<number> = new Set([10, 18]);
export const PRODUCER_STATE_ERRORS: ReadonlySet<number> = new Set([45, 47, 59]);

export function kafkaErrorCode(code: number): KafkaErrorCode {
  return TABLE[code] ?? { name: `ERROR_${code}`, retriable: false };
}
