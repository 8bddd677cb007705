/**
 * Removing a consumer group's members on their behalf, for an exclusive member
 * (`ConsumerOptions.exclusive`: transactional apply, its group's only member by design) that
 * is about to join.
 *
 * Why: a member killed with kill -9 never sends LeaveGroup, and the coordinator lists it until
 * its session expires (`sessionTimeoutMs`, 10 s). A new member's join starts a rebalance, and
 * a rebalance completes only once every listed member has rejoined or expired: the restarted
 * apply gets no partition, and transactional apply (which needs every partition) applies
 * nothing, until then. Kafka's answer, static membership (`group.instance.id`, KIP-345: a
 * restarted member with the same instance id takes its predecessor's place at once), is not in
 * kafkajs 2.2.4: its protocol encoders carry the field, but its consumer never sends it.
 * So the exclusive member removes whatever the group still lists before it joins, as Kafka's
 * own `Admin.removeMembersFromConsumerGroup` does (LeaveGroup v3 naming the members,
 * KIP-345/KIP-571). Were one of them alive after all (a second transactional apply, against
 * the one-apply rule), it learns at its next heartbeat (UNKNOWN_MEMBER_ID) and rejoins, as
 * after an expired session; the two then share the partitions as they would have anyway.
 */
import { SynclineError } from '../../core/errors.js';
import { KafkaConnection } from './kafka-connection.js';
import { kafkaErrorCode, NONE, UNKNOWN_MEMBER_ID } from './protocol/error-codes.js';
import { decodeFindCoordinatorResponse, decodeLeaveGroupResponse, encodeFindCoordinatorRequest, encodeLeaveGroupRequest } from './protocol/messages.js';

export interface GroupCleanupOptions {
  /** `host:port` of one or more brokers. */
  brokers: readonly string[];
  clientId: string;
  connectTimeoutMs: number;
  requestTimeoutMs: number;
}

/**
 * Removes `memberIds` from `groupId`: finds the group's coordinator and sends it one
 * LeaveGroup naming them. Resolves with the members it removed (one that was gone already,
 * UNKNOWN_MEMBER_ID, is not among them).
 */
export async function removeGroupMembers(opts: GroupCleanupOptions, groupId: string, memberIds: readonly string[]): Promise<string[]> {
  if (memberIds.length === 0) return [];
  const opened: KafkaConnection[] = [];
  const open = async (host: string, port: number): Promise<KafkaConnection> => {
    const c = await KafkaConnection.connect(host, port, opts.connectTimeoutMs);
    opened.push(c);
    return c;
  };
  try {
    let bootstrap: KafkaConnection | undefined;
    let last: unknown;
    for (const hostPort of opts.brokers) {
      const at = hostPort.lastIndexOf(':');
      try {
        bootstrap = await open(hostPort.slice(0, at), Number(hostPort.slice(at + 1)));
        break;
      } catch (err) {
        last = err;
      }
    }
    if (bootstrap === undefined) throw last;
    const found = decodeFindCoordinatorResponse(
      await bootstrap.request(encodeFindCoordinatorRequest(opts.clientId, groupId), opts.requestTimeoutMs, `finding the coordinator of group ${groupId}`),
    );
    if (found.error !== NONE) throw groupError(found.error, `finding the coordinator of group ${groupId}`);
    const coordinator = `${found.host}:${found.port}` === bootstrap.address ? bootstrap : await open(found.host, found.port);
    const left = decodeLeaveGroupResponse(
      await coordinator.request(encodeLeaveGroupRequest(opts.clientId, groupId, memberIds), opts.requestTimeoutMs, `removing members of group ${groupId}`),
    );
    if (left.error !== NONE) throw groupError(left.error, `removing members of group ${groupId}`);
    const removed: string[] = [];
    for (const m of memberIds) {
      const error = left.members.get(m) ?? NONE;
      if (error === NONE) removed.push(m);
      else if (error !== UNKNOWN_MEMBER_ID) throw groupError(error, `removing member ${m} of group ${groupId}`);
    }
    return removed;
  } finally {
    for (const c of opened) c.close();
  }
}

function groupError(code: number, doing: string): SynclineError {
  const { name, retriable } = kafkaErrorCode(code);
  return new SynclineError(`KAFKA_${name}`, `Kafka: ${doing} failed: ${name}`, { retriable });
}
