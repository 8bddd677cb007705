/**
 * Waits for a condition instead of sleeping: polls `check` until it holds, and fails naming
 * `what` after `timeoutMs` (with what `explain` says about the state then, when given).
 */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  intervalMs = 100,
  explain?: () => string | Promise<string>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  const state = explain ? `; last seen: ${await Promise.resolve(explain()).catch((err: unknown) => String(err))}` : '';
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${state}`);
}
