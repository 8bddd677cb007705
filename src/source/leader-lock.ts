import type pg from 'pg';

/**
 * One capture per slot: the leader holds a session-level advisory lock on the source,
 * keyed by the slot name. A standby polls for it; when the leader dies (even by kill -9)
 * its connection closes, the server releases the lock, and the standby takes over from the
 * slot's confirmed position.
 */
export async function acquireCaptureLeadership(
  client: pg.Client,
  slot: string,
  signal: AbortSignal,
  onWaiting: () => void,
  pollMs = 500,
): Promise<boolean> {
  let announced = false;
  while (!signal.aborted) {
    const { rows } = await client.query<{ ok: boolean }>(`SELECT ${tryLeadershipSql('$1')} AS ok`, [slot]);
    if (rows[0]?.ok) return true;
    if (!announced) {
      onWaiting();
      announced = true;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
  return false;
}

/** SQL (boolean) taking the leadership of slot `slot` (an SQL expression) for this session, if free. */
export function tryLeadershipSql(slot: string): string {
  return `pg_try_advisory_lock(hashtext('syncline.capture'), hashtext(${slot}))`;
}
