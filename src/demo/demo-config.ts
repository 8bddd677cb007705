/**
 * The demo pipeline's config: the demo's defaults, the user's file (`syncline demo -c FILE`)
 * over them, and what only the demo can know over both: its embedded databases, slot,
 * publication and folders. So a user can try their own settings (partitions, batch deadlines,
 * apply lanes, consistency, a Kafka or NATS stream, monitoring) on the demo's workload.
 */
import path from 'node:path';
import { validateConfig } from '../config/load.js';
import type { SynclineConfig } from '../config/schema.js';

export const DEMO_TABLES = ['customers', 'orders'];
export const DEMO_SLOT = 'syncline_demo';

export interface DemoPlaces {
  sourceUrl: string;
  targetUrl: string;
  /** The demo's one folder: spill files and the embedded stream live there. */
  dir: string;
  metricsPort: number;
}

type Mapping = Record<string, unknown>;

function isMapping(v: unknown): v is Mapping {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** `over` laid on `base`, mappings merged key by key, anything else replaced. */
function layered(base: Mapping, over: Mapping): Mapping {
  const out: Mapping = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isMapping(b) && isMapping(v) ? layered(b, v) : v;
  }
  return out;
}

/** Validates like a config file: a bad setting in the user's file fails with its path (exit 2). */
export function demoConfig(places: DemoPlaces, user: unknown): SynclineConfig {
  const defaults: Mapping = {
    source: { heartbeat_interval_ms: 2000 },
    stream: { broker: 'embedded', partitions: 4 },
    consumer: { group_id: 'demo', retry: { backoff_base_ms: 100, backoff_max_ms: 2000 } },
    monitoring: { port: places.metricsPort },
  };
  const merged = layered(defaults, isMapping(user) ? user : {});
  const stream = isMapping(merged.stream) ? merged.stream : {};
  const owned: Mapping = {
    source: {
      url: places.sourceUrl,
      slots: [{ name: DEMO_SLOT, publication: `${DEMO_SLOT}_pub`, tables: DEMO_TABLES }],
      spill_dir: path.join(places.dir, 'spill'),
    },
    sink: { type: 'postgres', url: places.targetUrl },
    monitoring: { port: places.metricsPort },
    // A broker of the user's (Kafka, NATS) keeps its own address; the embedded stream lives in the demo's folder.
    ...(stream.broker === undefined || stream.broker === 'embedded' ? { stream: { path: path.join(places.dir, 'stream') } } : {}),
  };
  return validateConfig(layered(merged, owned));
}

/** The metrics port the user's file asks for, when it names one (the `--metrics-port` flag wins over it). */
export function metricsPortOf(user: unknown): number | undefined {
  const port = isMapping(user) && isMapping(user.monitoring) ? user.monitoring.port : undefined;
  return typeof port === 'number' ? port : undefined;
}
