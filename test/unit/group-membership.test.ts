import type { KV } from 'nats';
import { describe, expect, it } from 'vitest';
import { GroupMembership, fairShare } from '../../src/stream/nats/group-membership.js';

/** An in-memory stand-in for the NATS KV calls the membership uses (revisions, create/update CAS). */
function memoryKv(): { kv: KV; failDeletes: (on: boolean) => void; owner: (p: number) => string | undefined } {
  let revision = 0;
  let failing = false;
  const store = new Map<string, { value: string; revision: number; operation: 'PUT' | 'DEL'; created: Date }>();
  const entry = (v: { value: string; revision: number; operation: 'PUT' | 'DEL'; created: Date }) => ({ ...v, string: () => v.value });
  const put = (k: string, value: string): number => {
    store.set(k, { value, revision: ++revision, operation: 'PUT', created: new Date() });
    return revision;
  };
  const kv = {
    put: async (k: string, value: string) => put(k, value),
    get: async (k: string) => (store.has(k) ? entry(store.get(k) as never) : null),
    create: async (k: string, value: string) => {
      if (store.get(k)?.operation === 'PUT') throw new Error('exists');
      return put(k, value);
    },
    update: async (k: string, value: string, r: number) => {
      if (store.get(k)?.revision !== r) throw new Error('wrong revision');
      return put(k, value);
    },
    delete: async (k: string, o?: { previousSeq?: number }) => {
      if (failing) throw new Error('timeout');
      const v = store.get(k);
      if (o?.previousSeq !== undefined && v?.revision !== o.previousSeq) throw new Error('wrong revision');
      store.set(k, { value: '', revision: ++revision, operation: 'DEL', created: new Date() });
    },
    keys: async (filter: string) =>
      (async function* () {
        const prefix = filter.replace('*', '');
        for (const [k, v] of store) if (k.startsWith(prefix) && v.operation === 'PUT') yield k;
      })(),
  };
  return { kv: kv as unknown as KV, failDeletes: (on) => (failing = on), owner: (p) => store.get(`g.owner.${p}`)?.value };
}

describe('NATS group membership', () => {
  it('shares partitions p mod n in member order', () => {
    expect(fairShare(5, 2, 0)).toEqual([0, 2, 4]);
    expect(fairShare(5, 2, 1)).toEqual([1, 3]);
    expect(fairShare(2, 3, 2)).toEqual([]);
  });

  it('hands a partition over only after its holder released it, and retries a release that failed', async () => {
    const { kv, failDeletes, owner } = memoryKv();
    const a = new GroupMembership(kv, 'g', 2);
    const b = new GroupMembership(kv, 'g', 2);
    expect((await a.tick()).acquired).toEqual([0, 1]);
    expect((await b.tick()).acquired).toEqual([]); // a still holds b's share
    const change = await a.tick();
    expect(change.revoke).toHaveLength(1);
    const moving = change.revoke[0] as number;
    failDeletes(true);
    await expect(a.release(moving)).rejects.toThrow();
    failDeletes(false);
    expect(a.holds(moving)).toBe(false);
    expect((await b.tick()).acquired).toEqual([]); // the lease is still a's
    await a.tick(); // a finds its stray lease and releases it again...
    expect((await b.tick()).acquired).toEqual([moving]); // ...and b takes it
    expect(owner(moving)).toBe(b.member);
    expect(a.holds(moving)).toBe(false);
  });

  it('takes back a stray lease of its own that is in its share (nobody else may read it)', async () => {
    const { kv, failDeletes, owner } = memoryKv();
    const a = new GroupMembership(kv, 'g', 2);
    expect((await a.tick()).acquired).toEqual([0, 1]);
    failDeletes(true);
    await expect(a.release(1)).rejects.toThrow(); // released locally, the lease stays a's
    failDeletes(false);
    expect((await a.tick()).acquired).toEqual([1]); // still a's share: read it again
    expect(owner(1)).toBe(a.member);
    expect(a.holds(1)).toBe(true);
  });

  it('reports the leases a tick took before the bucket failed it (none is held unread)', async () => {
    const { kv } = memoryKv();
    const get = kv.get.bind(kv);
    let failOnce = true;
    kv.get = (async (k: string) => {
      if (k === 'g.owner.2' && failOnce) {
        failOnce = false;
        throw new Error('timeout');
      }
      return get(k);
    }) as KV['get'];
    const a = new GroupMembership(kv, 'g', 4);
    // Partitions 0 and 1 were taken before the failure: they are reported, not just held.
    expect((await a.tick()).acquired).toEqual([0, 1]);
    expect((await a.tick()).acquired).toEqual([2, 3]);
  });

  it('stays expired after a pause until its tick has checked the leases, not just until the heartbeat got through', async () => {
    const { kv } = memoryKv();
    const a = new GroupMembership(kv, 'g', 2, { heartbeatMs: 10, sessionTimeoutMs: 50 });
    expect((await a.tick()).acquired).toEqual([0, 1]);
    expect(a.expired()).toBe(false);
    await new Promise((r) => setTimeout(r, 80)); // paused past the session timeout
    expect(a.expired()).toBe(true);
    const get = kv.get.bind(kv);
    const seen: boolean[] = [];
    kv.get = (async (k: string) => {
      // Asked while the tick looks at the leases, after the heartbeat was written.
      if (k.startsWith('g.owner.')) seen.push(a.expired());
      return get(k);
    }) as KV['get'];
    await a.tick();
    expect(seen).toEqual([true, true]);
    expect(a.expired()).toBe(false);
  });

  it('fails a tick whose key listing never ends (nats.js after a connection cut) instead of hanging every later one', async () => {
    const { kv } = memoryKv();
    const a = new GroupMembership(kv, 'g', 2, { heartbeatMs: 10, sessionTimeoutMs: 100 });
    expect((await a.tick()).acquired).toEqual([0, 1]);
    const keys = kv.keys.bind(kv);
    let stopped = false;
    kv.keys = (async () =>
      Object.assign(
        (async function* () {
          await new Promise(() => undefined); // the ordered consumer's iterator, stuck
          yield '';
        })(),
        { stop: () => (stopped = true) },
      )) as unknown as KV['keys'];
    await expect(a.tick()).rejects.toThrow(/no end within/);
    expect(stopped).toBe(true);
    kv.keys = keys;
    expect(await a.tick()).toEqual({ acquired: [], revoke: [], lost: [] });
  });
});
