import { realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FAULT_KINDS, runChaos, type ChaosOptions, type FaultKind, type StreamKind } from './chaos.js';
import type { SinkType } from './compare.js';
import { seedFrom } from './prng.js';
import { FEATURES, type Feature } from './workload.js';

const USAGE = `npm run chaos -- [options]

  --seed N            PRNG seed (printed; replays the same workload and fault schedule)
  --faults N          faults in all, spread over the scenarios (default 10; the long run is 100)
  --stream S          embedded | kafka | nats | all (default embedded; a comma list works too)
  --sink S            postgres | mysql | sqlite | all (default postgres)
  --duration D        spread each scenario's faults over D (e.g. 60s, 5m); default 1.5-5 s apart
  --mode M            run (one process) | split (capture + apply) | mixed (default: by the seed)
  --writers N         concurrent writers on the source, 1-16 (default: 1-4, by the seed per scenario)
  --consistency C     sink.consistency: eventual | transactional | mixed (default: by the seed per scenario)
  --faults-only K,..  fault kinds to draw from: ${FAULT_KINDS.join(',')} (default all)
  --exclude F,..      leave workload features out: ${FEATURES.join(',')}
  --features F,..     only these features
  --pace MS           max pause between workload transactions (default 15)
  --converge-timeout D  how long to wait for the target to equal the source (default 240s or 4x the workload's time)
  --cli PATH          the built CLI to test (default dist/cli/main.js)
  --log-dir DIR       where logs go (default a temp dir; kept on failure)
  --keep-logs         keep logs and databases also when everything passed
  --kafka-port N      port of the harness's own Kafka broker (default 19092)
`;

function duration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) throw new Error(`not a duration: ${s}`);
  const n = Number(m[1]);
  return n * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h']);
}

function list<T extends string>(value: string, all: readonly T[], what: string): T[] {
  if (value === 'all') return [...all];
  const items = value.split(',').map((x) => x.trim()).filter(Boolean);
  for (const i of items) if (!all.includes(i as T)) throw new Error(`unknown ${what} ${i} (one of ${all.join(', ')}, all)`);
  return items as T[];
}

export function parseArgs(argv: string[], root: string): ChaosOptions {
  const args = new Map<string, string>();
  const flags = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    if (a === '--keep-logs') {
      flags.add(a);
      continue;
    }
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}\n${USAGE}`);
    const [k, inline] = a.split('=', 2) as [string, string | undefined];
    const v = inline ?? argv[++i];
    if (v === undefined) throw new Error(`${k} needs a value`);
    args.set(k, v);
  }
  let features = new Set<Feature>(args.has('--features') ? list(args.get('--features') as string, FEATURES, 'feature') : FEATURES);
  if (args.has('--exclude')) for (const f of list(args.get('--exclude') as string, FEATURES, 'feature')) features.delete(f);
  features = new Set(features);
  const opts: ChaosOptions = {
    seed: seedFrom(args.get('--seed')),
    faults: Number(args.get('--faults') ?? 10),
    streams: list<StreamKind>(args.get('--stream') ?? 'embedded', ['embedded', 'kafka', 'nats'], 'stream'),
    sinks: list<SinkType>(args.get('--sink') ?? 'postgres', ['postgres', 'mysql', 'sqlite'], 'sink'),
    features,
    faultKinds: new Set(list<FaultKind>(args.get('--faults-only') ?? 'all', FAULT_KINDS, 'fault kind')),
    mode: (args.get('--mode') ?? 'mixed') as ChaosOptions['mode'],
    cli: path.resolve(args.get('--cli') ?? path.join(root, 'dist/cli/main.js')),
    root,
    keepLogs: flags.has('--keep-logs'),
    paceMs: Number(args.get('--pace') ?? 15),
    kafkaPort: Number(args.get('--kafka-port') ?? 19092),
  };
  if (args.has('--converge-timeout')) opts.convergeTimeoutMs = duration(args.get('--converge-timeout') as string);
  if (args.has('--writers')) opts.writers = Number(args.get('--writers'));
  if (args.has('--consistency')) opts.consistency = args.get('--consistency') as ChaosOptions['consistency'];
  if (args.has('--duration')) opts.durationMs = duration(args.get('--duration') as string);
  if (args.has('--log-dir')) opts.logDir = path.resolve(args.get('--log-dir') as string);
  if (!['run', 'split', 'mixed'].includes(opts.mode)) throw new Error(`--mode must be run, split or mixed`);
  if (opts.writers !== undefined && (!Number.isInteger(opts.writers) || opts.writers < 1 || opts.writers > 16)) throw new Error('--writers must be an integer from 1 to 16');
  if (opts.consistency !== undefined && !['eventual', 'transactional', 'mixed'].includes(opts.consistency)) throw new Error('--consistency must be eventual, transactional or mixed');
  if (!Number.isInteger(opts.faults) || opts.faults < 1) throw new Error('--faults must be a positive integer');
  return opts;
}

async function main(): Promise<void> {
  const root = process.env.SYNCLINE_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
  let opts: ChaosOptions;
  try {
    opts = parseArgs(process.argv.slice(2), root);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
  const result = await runChaos(opts);
  process.exit(result.ok ? 0 : 1);
}

// Real paths: run through a symlinked node_modules (a worktree), the two spellings differ.
if (process.argv[1] && realpathSync(fileURLToPath(import.meta.url)) === realpathSync(path.resolve(process.argv[1]))) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(2);
  });
}
