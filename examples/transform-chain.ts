/**
 * A transform chain: what reaches the sink is filtered, privacy-scrubbed, renamed and routed
 * on the way, without touching the version gate, the positions or the dead-letter queue.
 */
import { addColumn, chain, dropOps, dropTables, filter, hashColumns, maskColumns, renameColumns, routeTables, type Transform } from 'syncline';

export const transforms: Transform[] = [
  // Not replicated at all (their positions still advance).
  dropTables('public.audit_log', 'public.sessions'),
  // An append-only target: deletes and truncations stay at the source.
  dropOps('DELETE', 'TRUNCATE'),
  // Test tenants never leave the database.
  filter((c) => c.payload?.tenant !== 'test'),
  // Privacy: emails masked, national ids pseudonymised (deterministic, so joins still work).
  maskColumns({ 'public.users': ['email', 'phone'] }),
  hashColumns({ 'public.users': ['national_id'] }, { secret: process.env.HASH_SECRET ?? 'change-me' }),
  // The target's naming: a renamed key column keeps its place, so rows keep their identity.
  renameColumns({ 'public.users': { id: 'user_id' } }),
  routeTables({ 'public.users': 'crm.contacts' }),
  // A computed column.
  addColumn('public.orders', 'total_cents', (c) => (c.payload?.total == null ? null : String(Math.round(Number(c.payload.total) * 100)))),
];

/** The same, as one reusable transform. */
export const scrub: Transform = chain(...transforms);
