import { randomBytes } from 'node:crypto';
import type { KV, KvEntry } from 'nats';

/**
 * Consumer-group membership for NATS JetStream, which has none of its own: members and
 * partition leases are keys in the topic's KV bucket (next to the committed positions).
 *
 *   <group>.members.<member>   written by each member every `heartbeatMs`
 *   <group>.owner.<partition>  the member reading that partition
 *
 * A member is alive while its heartbeat is younger than `sessionTimeoutMs`, judged by the
 * server's timestamps on the KV entries (no clock of ours is compared with another's).
 * Partitions are shared by a fixed rule every member computes alike (`fairShare`: partition
 * p goes to the (p mod n)-th live member in id order), and taken through the lease keys
 * with compare-and-set, so a partition has at most one reader at a time: a member releases
 * a partition (after it stopped reading it) before another may take it, unless the holder
 * is no longer alive. A member that finds its lease taken (it was paused past the session
 * timeout) stops reading that partition at once.
 */
export interface MembershipOptions {
  heartbeatMs?: number;
  sessionTimeoutMs?: number;
}

export const DEFAULT_HEARTBEAT_MS = 1000;
export const DEFAULT_SESSION_TIMEOUT_MS = 6000;
/** Longest a listing of the bucket's keys may take (nats.js's own request timeout). */
const LIST_KEYS_TIMEOUT_MS = 5000;

/** Which partitions the member at `index` of `members` live members reads. */
export function fairShare(partitions: number, members: number, index: number): number[] {
  const out: number[] = [];
  if (members <= 0 || index < 0) return out;
  for (let p = index; p < partitions; p += members) out.push(p);
  return out;
}

export interface MembershipChange {
  /** Partitions this member now holds the lease of and should start reading. */
  acquired: number[];
  /** Partitions this member must stop reading; call `release` once it has stopped (unless `lost`). */
  revoke: number[];
  /** Partitions whose lease another member took: stop reading, nothing to release. */
  lost: number[];
}

export class GroupMembership {
  readonly member = randomBytes(8).toString('hex');
  private readonly heartbeatMs: number;
  private readonly sessionTimeoutMs: number;
  /** Partitions whose lease this member holds. */
  private readonly held = new Set<number>();
  private lastBeat = 0;

  constructor(
    private readonly kv: KV,
    private readonly group: string,
    private readonly partitions: number,
    options: MembershipOptions = {},
  ) {
    this.heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.sessionTimeoutMs = options.sessionTimeoutMs ?? DEFAULT_SESSION_TIMEOUT_MS;
  }

  get interval(): number {
    return this.heartbeatMs;
  }

  get sessionTimeout(): number {
    return this.sessionTimeoutMs;
  }

  /** Held leases, as of the last tick. */
  holds(partition: number): boolean {
    return this.held.has(partition);
  }

  /**
   * Heartbeats, checks the leases held, and takes the free leases of this member's share.
   * Throws when the bucket cannot be reached; `expired()` then tells whether the leases
   * must be considered lost.
   */
  async tick(): Promise<MembershipChange> {
    const change: MembershipChange = { acquired: [], revoke: [], lost: [] };
    // Taken before the heartbeat is written: `expired()` errs on the early side.
    const attempt = Date.now();
    // A member that was expired (its event loop blocked, the bucket unreachable) may have had
    // its leases taken meanwhile: it stays expired, handing out and committing nothing, until
    // this tick has checked every lease, not just until its heartbeat got through.
    const stale = this.expired();
    await this.kv.put(this.memberKey(this.member), this.member);
    const mine = await this.kv.get(this.memberKey(this.member));
    if (mine === null) return change;
    const now = mine.created.getTime();
    if (!stale) this.lastBeat = attempt;
    const live = await this.liveMembers(now);
    if (!live.includes(this.member)) live.push(this.member);
    live.sort();
    const share = new Set(fairShare(this.partitions, live.length, live.indexOf(this.member)));
    const liveSet = new Set(live);
    for (let p = 0; p < this.partitions; p++) {
      try {
        await this.tickPartition(p, share, liveSet, change);
      } catch (err) {
        // Leases already taken or lost in this tick must reach the caller (a lease held but
        // never reported would leave its partition unread for good); the rest waits for the
        // next tick.
        if (change.acquired.length + change.lost.length + change.revoke.length > 0) return change;
        throw err;
      }
    }
    this.lastBeat = attempt;
    return change;
  }

  /** One partition's part of a tick: records into `change` what this member must do about it. */
  private async tickPartition(p: number, share: ReadonlySet<number>, liveSet: ReadonlySet<string>, change: MembershipChange): Promise<void> {
    const lease = await this.kv.get(this.ownerKey(p));
    const owner = lease !== null && lease.operation === 'PUT' ? lease.string() : undefined;
    if (this.held.has(p)) {
      if (owner !== this.member) {
        this.held.delete(p);
        change.lost.push(p);
      } else if (!share.has(p)) {
        change.revoke.push(p);
      }
      return;
    }
    if (owner === this.member) {
      // A lease of ours that we do not hold: a release that failed. Take it back if it is
      // ours to read, else release it again.
      if (share.has(p)) {
        this.held.add(p);
        change.acquired.push(p);
      } else if (lease) {
        await this.kv.delete(this.ownerKey(p), { previousSeq: lease.revision }).catch(() => undefined);
      }
      return;
    }
    if (!share.has(p)) return;
    if (owner !== undefined && liveSet.has(owner)) return; // released on its owner's next tick
    if (await this.take(p, lease, owner)) {
      this.held.add(p);
      change.acquired.push(p);
    }
  }

  /**
   * True when no heartbeat succeeded for nearly a session timeout (two heartbeats short of
   * it): the others may take this member's leases any moment, so it must stop handing out.
   */
  expired(): boolean {
    return this.lastBeat > 0 && Date.now() - this.lastBeat > this.sessionTimeoutMs - 2 * this.heartbeatMs;
  }

  /**
   * Gives a lease back after this member stopped reading the partition. If the bucket fails,
   * the lease stays ours but not held: the next tick takes it back (ours to read) or
   * releases it again.
   */
  async release(partition: number): Promise<void> {
    if (!this.held.delete(partition)) return;
    const lease = await this.kv.get(this.ownerKey(partition));
    if (lease !== null && lease.operation === 'PUT' && lease.string() === this.member) {
      await this.kv.delete(this.ownerKey(partition), { previousSeq: lease.revision });
    }
  }

  /** Forgets every lease without releasing them (they were lost, or their owner stops). */
  forgetAll(): number[] {
    const all = [...this.held];
    this.held.clear();
    return all;
  }

  /** Leaves the group: releases the leases and removes the heartbeat, so others take over at once. */
  async leave(): Promise<void> {
    for (const p of [...this.held]) await this.release(p).catch(() => undefined);
    this.held.clear();
    await this.kv.delete(this.memberKey(this.member)).catch(() => undefined);
  }

  private async take(partition: number, lease: KvEntry | null, owner: string | undefined): Promise<boolean> {
    const key = this.ownerKey(partition);
    try {
      if (owner === this.member) return true;
      // No lease (or a deleted one): create fails if another member created it meanwhile.
      if (lease === null || lease.operation !== 'PUT') await this.kv.create(key, this.member);
      // A lease of a member that is no longer alive: replace exactly that revision.
      else await this.kv.update(key, this.member, lease.revision);
      return true;
    } catch {
      return false; // another member was faster; the next tick looks again
    }
  }

  private async liveMembers(now: number): Promise<string[]> {
    const prefix = `${this.group}.members.`;
    const keys = await this.listKeys(`${prefix}*`);
    const live: string[] = [];
    for (const k of keys) {
      const e = await this.kv.get(k);
      if (e === null || e.operation !== 'PUT') continue;
      const age = now - e.created.getTime();
      if (age <= this.sessionTimeoutMs) live.push(k.slice(prefix.length));
      // Heartbeats of members long gone: tidy up so the key listing stays short.
      else if (age > 10 * this.sessionTimeoutMs) await this.kv.delete(k, { previousSeq: e.revision }).catch(() => undefined);
    }
    return live;
  }

  /**
   * The bucket's keys matching `filter`, or a failure after a session timeout (5 s at most).
   * nats.js lists keys through an ordered consumer whose iterator never ends when the
   * connection is cut during the listing; awaited without a deadline it held the tick, and
   * every later one queued behind it, for good: the member stayed expired, handing out
   * nothing, without an error.
   */
  private async listKeys(filter: string): Promise<string[]> {
    const iterator = await this.kv.keys(filter);
    const keys: string[] = [];
    const listing = (async () => {
      for await (const k of iterator) keys.push(k);
    })();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`listing ${filter} in the positions bucket got no end within ${LIST_KEYS_TIMEOUT_MS} ms`)), Math.min(LIST_KEYS_TIMEOUT_MS, this.sessionTimeoutMs));
    });
    try {
      await Promise.race([listing, deadline]);
      return keys;
    } catch (err) {
      (iterator as { stop?: () => void }).stop?.();
      listing.catch(() => undefined);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  private memberKey(member: string): string {
    return `${this.group}.members.${member}`;
  }

  private ownerKey(partition: number): string {
    return `${this.group}.owner.${partition}`;
  }
}
