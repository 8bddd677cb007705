/**
 * The design's hand-written SyncCoordinator — a kafkajs consumer, an ioredis SETNX dedup key
 * `sync:{source}:{table}:{lsn}` per change, a retry loop and a dead-letter topic around the
 * user's apply code — ported to syncline. The user's apply code becomes a GatedTarget; the
 * dedup, retries, dead-lettering, offsets and metrics are syncline's. See the README section
 * "From a hand-written coordinator to syncline".
 */
import { createPipeline, loadConfig, PostgresGateStore, versionGatedSink, type ChangeEvent } from 'syncline';

/** The user's own apply code, unchanged from the coordinator (here: a log line per change). */
export async function applyToSearchIndex(changes: readonly ChangeEvent[]): Promise<void> {
  for (const c of changes) console.log(`${c.op} ${c.schema}.${c.table} ${JSON.stringify(c.key)}`);
}

export async function main(configPath = 'sync.yaml'): Promise<void> {
  const config = loadConfig(configPath); // stream.broker: kafka, brokers: [...] as before
  const pipeline = createPipeline({
    config,
    role: 'apply', // capture runs as `syncline capture`, or role 'run' here
    // Marked only after applyToSearchIndex succeeded, like the coordinator's Redis key, but
    // version-gated: an older change arriving late is skipped, not applied over a newer one.
    sink: versionGatedSink({
      store: new PostgresGateStore({ url: config.dead_letter.url ?? 'postgres://127.0.0.1/syncline', sink: 'search-index' }),
      target: { write: applyToSearchIndex },
    }),
  });
  pipeline.on('deadLettered', (letters) => console.error(`dead-lettered ${letters.length}: ${letters[0]?.error}`));
  pipeline.on('error', (err, part) => console.error(`${part} failed: ${err.message}`));
  await pipeline.start();
  const stop = (): void => void pipeline.stop();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  await pipeline.done;
}
