import type { IncomingMessage } from 'node:http';
import { SynclineError } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';
import { deadLetterSummary, type DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import { replayDeadLetters } from '../dlq/replay.js';
import type { Logger } from '../log/logger.js';
import type { Sink } from '../sink/sink.js';
import type { DlqAction, DlqListResponse, PurgeResponse, ReplayResponse } from './api.js';
import { HttpError, readBody } from './http.js';

export const ACTIONS_DISABLED_MESSAGE =
  'dashboard actions are disabled: set monitoring.dashboard_token in the config (or the SYNCLINE_DASHBOARD_TOKEN environment variable) and restart syncline to enable replay and purge';

const MAX_IDS = 1000;
/** Entry ids: digits (the table's), or the topic's `<source>:<commit_lsn>:<seq>` / `<partition>-<offset>`. */
const ID = /^(?:[0-9]{1,19}|[0-9]{1,19}-[0-9]{1,19}|[A-Za-z0-9_.-]{1,100}:[0-9A-F]{1,8}\/[0-9A-F]{1,8}:[0-9]{1,10})$/;

export interface DlqDepth {
  count: number;
  oldestAgeSeconds: number;
  note?: string;
}

export interface DeadLetterActionsOptions {
  /** The dead-letter queue to list, replay and purge; undefined when it is disabled. */
  deadLetters?: DeadLetterQueue | undefined;
  /** The sink replays go through; undefined for a capture-only process (replay is refused). */
  sink?: Sink | undefined;
  /** Consumer group whose positions the sink keeps (replays write rows only, no positions). */
  group: string;
  /** `sink.consistency: transactional`: a replay applies a source transaction's entries whole or not at all. */
  transactional?: boolean | undefined;
  log?: Logger | undefined;
  /** Called after an action changed the queue. */
  changed: () => Promise<void>;
}

/** The queue's depth; undefined when it cannot be read. */
export async function readDepth(dlq: DeadLetterQueue): Promise<DlqDepth | undefined> {
  try {
    return await dlq.depth();
  } catch (err) {
    // Apply creates the table on its first start; until then the queue is empty.
    return isMissingTable(err) ? { count: 0, oldestAgeSeconds: 0, note: 'not created yet' } : undefined;
  }
}

/**
 * `GET /api/dlq` and the actions `POST /api/dlq/replay` and `POST /api/dlq/purge`
 * (`{"ids": [...]}`). The caller checks the access token; replays and purges run one at a time.
 */
export class DeadLetterActions {
  private sinkReady: Promise<void> | undefined;
  private running: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: DeadLetterActionsOptions) {}

  async list(limitParam: string | null): Promise<DlqListResponse> {
    let limit = 100;
    if (limitParam !== null) {
      if (!/^[0-9]{1,6}$/.test(limitParam) || Number(limitParam) < 1) throw new HttpError(400, 'limit must be a positive integer');
      limit = Math.min(Number(limitParam), 1000);
    }
    const dlq = this.options.deadLetters;
    if (!dlq) return { enabled: false, entries: [] };
    try {
      const entries = await dlq.list({ limit });
      return { enabled: true, limit, entries: entries.map(deadLetterSummary) };
    } catch (err) {
      if (isMissingTable(err)) return { enabled: true, limit, entries: [], note: 'not created yet' };
      throw err;
    }
  }

  async perform(req: IncomingMessage, kind: DlqAction): Promise<ReplayResponse | PurgeResponse> {
    const dlq = this.options.deadLetters;
    if (!dlq) {
      req.resume();
      throw new HttpError(409, 'the dead-letter queue is disabled (dead_letter.enabled: false)');
    }
    const ids = parseIds(await readBody(req));
    // Replays go through the sink; a purge has none.
    const sink = kind === 'replay' ? this.options.sink : undefined;
    if (kind === 'replay' && !sink) throw new HttpError(409, 'replay needs a sink: this process runs capture only; use the dashboard of a run or apply process, or syncline dlq replay');
    const { log, group } = this.options;
    const run = async (): Promise<ReplayResponse | PurgeResponse> => {
      const entries = await dlq.list({ ids, limit: ids.length });
      const found = new Set(entries.map((e) => e.id));
      const missing = ids.filter((id) => !found.has(id));
      if (!sink) {
        const purged = await dlq.remove(entries.map((e) => e.id));
        log?.info({ purged, requested: ids.length }, 'dashboard: dead-letter entries purged');
        await this.options.changed();
        return { ok: true, purged, missing };
      }
      await this.prepareSink(sink);
      const result = await replayDeadLetters(entries, sink, dlq, group, { transactional: this.options.transactional });
      log?.info({ replayed: result.replayed, failed: result.failed.length, held: result.held.length, requested: ids.length }, 'dashboard: dead-letter entries replayed');
      await this.options.changed();
      return { ok: result.failed.length === 0, ...result, failed: result.failed.map((f) => ({ id: f.id, error: redactUrl(f.error) })), missing };
    };
    const done = this.running.then(run, run);
    this.running = done.catch(() => undefined);
    return done;
  }

  /** Waits for a running replay or purge. */
  async close(): Promise<void> {
    await this.running.catch(() => undefined);
  }

  private prepareSink(sink: Sink): Promise<void> {
    this.sinkReady ??= sink.prepare().catch((err: unknown) => {
      this.sinkReady = undefined;
      throw err;
    });
    return this.sinkReady;
  }
}

function parseIds(body: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new HttpError(400, 'the body must be JSON: {"ids": ["1", "2"]}');
  }
  const ids: unknown = parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as { ids?: unknown }).ids : undefined;
  if (!Array.isArray(ids) || ids.length === 0) throw new HttpError(400, 'ids must be a non-empty array of entry ids');
  if (ids.length > MAX_IDS) throw new HttpError(400, `at most ${MAX_IDS} ids per request`);
  const out: string[] = [];
  for (const id of ids as unknown[]) {
    const text = typeof id === 'number' && Number.isSafeInteger(id) ? String(id) : id;
    if (typeof text !== 'string' || !ID.test(text)) throw new HttpError(400, 'every id must be an entry id (digits, source:commit_lsn:seq or partition-offset)');
    if (!out.includes(text)) out.push(text);
  }
  return out;
}

function isMissingTable(err: unknown): boolean {
  const cause = err instanceof SynclineError ? err.cause : err;
  return cause !== null && typeof cause === 'object' && (cause as { code?: unknown }).code === '42P01';
}
