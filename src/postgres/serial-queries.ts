import type pg from 'pg';

/**
 * Makes `client` run the queries it is given one after another, queued here instead of in
 * node-postgres. Capture's admin connection serves flows that do not wait for each other
 * (heartbeats, slot state, snapshot jobs, schema versions): pg 8 queues a query called while
 * another is waiting and warns ("Calling client.query() when the client is already executing
 * a query is deprecated"), in users' logs, and pg 9 refuses it. Same order and the same
 * sharing as pg's own queue (a transaction on the client is not shielded from the others'
 * statements either way: at run time the flows run single autocommit statements there).
 * A callback or a submittable (a cursor, COPY) is passed through as it is.
 */
export function serializeQueries<C extends pg.Client>(client: C): C {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  let tail: Promise<unknown> = Promise.resolve();
  const queued = (...args: unknown[]): unknown => {
    const first = args[0] as { submit?: unknown } | null | undefined;
    if (typeof args[args.length - 1] === 'function' || typeof first?.submit === 'function') return query(...args);
    const run = tail.then(() => query(...args) as Promise<unknown>);
    tail = run.catch(() => undefined);
    return run;
  };
  client.query = queued as C['query'];
  return client;
}
