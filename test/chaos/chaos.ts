import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import mysql from 'mysql2/promise';
import Database from 'better-sqlite3';
import pg from 'pg';
import { diffTable, isEqual, mysqlTarget, postgresTarget, sqliteTarget, type SinkType, type Target, type TableDiff } from './compare.js';
import { Prng } from './prng.js';
import { mysqlTargetDdl, postgresTargetDdl, sourceDdl, sqliteTargetDdl, TABLES, type TableSpec } from './schema.js';
import { dropDatabases, freePort, KafkaBroker, NatsServer, TargetPostgres } from './services.js';
import { ChaosWorkload, emptyStats, type Feature, type WorkloadStats } from './workload.js';

const run = promisify(execFile);

export type StreamKind = 'embedded' | 'kafka' | 'nats';
export type FaultKind = 'kill9' | 'sigterm' | 'broker' | 'target' | 'snapshot' | 'cut';
export const FAULT_KINDS: FaultKind[] = ['kill9', 'sigterm', 'broker', 'target', 'snapshot', 'cut'];
export type Consistency = 'eventual' | 'transactional';

export interface ChaosOptions {
  seed: number;
  /** Faults in all, spread over the scenarios (each gets at least one). */
  faults: number;
  streams: StreamKind[];
  sinks: SinkType[];
  /** Per scenario: spread the faults over this long (else 1.5-5 s apart). */
  durationMs?: number;
  features: ReadonlySet<Feature>;
  faultKinds: ReadonlySet<FaultKind>;
  /** `run` (one process), `split` (capture + apply processes) or `mixed` (chosen per scenario by the seed). */
  mode: 'run' | 'split' | 'mixed';
  /** Concurrent writers on the source; undefined: 1-4, chosen per scenario by the seed. */
  writers?: number;
  /**
   * `sink.consistency` of the scenarios (every sink of the harness is a SQL sink, which all
   * support `transactional`); `mixed` (the default): chosen per scenario by the seed.
   */
  consistency?: Consistency | 'mixed';
  /** The built CLI (dist/cli/main.js). */
  cli: string;
  /** Repository root (for scripts/kafka.sh). */
  root: string;
  /** Directory for logs; kept on failure (or with keepLogs), else removed. */
  logDir?: string;
  keepLogs?: boolean;
  /** Max pause between workload transactions (ms). */
  paceMs?: number;
  /** How long the target may take to equal the source; default max(240 s, 4 x the workload's run time). */
  convergeTimeoutMs?: number;
  /** Source server (the machine's PostgreSQL 15). */
  sourceAdminUrl?: string;
  mysqlAdminUrl?: string;
  kafkaPort?: number;
  print?: (line: string) => void;
}

export interface FaultRecord {
  n: number;
  at: string;
  offsetMs: number;
  kind: FaultKind;
  detail: string;
  tookMs: number;
}

export interface ScenarioResult {
  name: string;
  stream: StreamKind;
  sink: SinkType;
  mode: 'run' | 'split';
  writers: number;
  consistency: Consistency;
  seed: number;
  ok: boolean;
  failures: string[];
  /** Oddities that are not failures (a SIGTERM during startup that killed the process). */
  notes: string[];
  faults: FaultRecord[];
  rowsCompared: number;
  auditRows: number;
  diffs: TableDiff[];
  workload: WorkloadStats;
  durationMs: number;
  convergeMs: number;
  logDir: string;
}

export interface ChaosResult {
  seed: number;
  ok: boolean;
  scenarios: ScenarioResult[];
  durationMs: number;
  logDir: string;
}

const SOURCE_ADMIN = process.env.SYNCLINE_TEST_PG15_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const MYSQL_ADMIN = process.env.SYNCLINE_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';

function dbUrl(admin: string, db: string): string {
  const u = new URL(admin);
  u.pathname = `/${db}`;
  return u.toString();
}

/** Shared services of one chaos run, started on first use. */
class Services {
  target?: TargetPostgres;
  nats?: NatsServer;
  kafka?: KafkaBroker;
  constructor(
    private readonly dir: string,
    private readonly opts: ChaosOptions,
  ) {}
  async targetPg(): Promise<TargetPostgres> {
    this.target ??= await TargetPostgres.start(path.join(this.dir, 'target-pg'));
    return this.target;
  }
  async natsServer(): Promise<NatsServer> {
    this.nats ??= await NatsServer.start(path.join(this.dir, 'nats'));
    return this.nats;
  }
  async kafkaBroker(): Promise<KafkaBroker> {
    this.kafka ??= await KafkaBroker.start(this.opts.root, this.opts.kafkaPort ?? 19092);
    return this.kafka;
  }
  async stop(): Promise<void> {
    await this.target?.stop();
    await this.nats?.stop();
    await this.kafka?.stop();
  }
}

/** One syncline process (run, capture or apply) that the harness kills and restarts. */
class Proc {
  child: ChildProcess | undefined;
  private starts = 0;
  private startedAt = 0;
  private expecting = false;
  exits: { code: number | null; signal: NodeJS.Signals | null }[] = [];

  constructor(
    readonly role: 'run' | 'capture' | 'apply',
    private readonly cli: string,
    private readonly config: string,
    private readonly dir: string,
    private readonly onUnexpected: (p: Proc, code: number | null, signal: NodeJS.Signals | null, log: string) => void,
  ) {}

  get logFile(): string {
    return path.join(this.dir, `${this.role}-${this.starts}.log`);
  }

  start(): void {
    this.starts++;
    const log = createWriteStream(this.logFile);
    const child = spawn(process.execPath, [this.cli, this.role, '-c', this.config], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.expecting = false;
    this.startedAt = Date.now();
    const file = this.logFile;
    child.once('exit', (code, signal) => {
      this.exits.push({ code, signal });
      if (!this.expecting) this.onUnexpected(this, code, signal, file);
    });
    this.child = child;
  }

  get alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** kill -9; resolves once it is gone. */
  async kill9(): Promise<void> {
    const c = this.child;
    if (!c || !this.alive) return;
    this.expecting = true;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await gone;
  }

  /** SIGTERM; how it ended, or 'timeout' (then killed) when it did not exit within `ms`. */
  async term(ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; upMs: number } | 'timeout' | undefined> {
    const c = this.child;
    if (!c || !this.alive) return undefined;
    this.expecting = true;
    const upMs = Date.now() - this.startedAt;
    const gone = new Promise<{ code: number | null; signal: NodeJS.Signals | null; upMs: number }>((r) => c.once('exit', (code, signal) => r({ code, signal, upMs })));
    c.kill('SIGTERM');
    const t = await Promise.race([gone, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))]);
    if (t === 'timeout') {
      c.kill('SIGKILL');
      await gone;
    }
    return t;
  }
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runChaos(opts: ChaosOptions): Promise<ChaosResult> {
  const print = opts.print ?? ((l: string) => process.stdout.write(`${l}\n`));
  const began = Date.now();
  const logDir = opts.logDir ?? path.join(os.tmpdir(), `syncline-chaos-${opts.seed}-${Date.now().toString(36)}`);
  mkdirSync(logDir, { recursive: true });
  const chaosLog = createWriteStream(path.join(logDir, 'chaos.log'), { flags: 'a' });
  const say = (l: string): void => {
    print(l);
    chaosLog.write(`${l}\n`);
  };
  const combos: { stream: StreamKind; sink: SinkType }[] = [];
  for (const stream of opts.streams) for (const sink of opts.sinks) combos.push({ stream, sink });
  say(`chaos: seed ${opts.seed} (replay with --seed ${opts.seed}); ${opts.faults} faults over ${combos.length} scenario(s): ${combos.map((c) => `${c.stream}->${c.sink}`).join(', ')}`);
  say(`chaos: features ${[...opts.features].join(',')}; faults ${[...opts.faultKinds].join(',')}; logs in ${logDir}`);
  const services = new Services(logDir, opts);
  const scenarios: ScenarioResult[] = [];
  const master = new Prng(opts.seed);
  try {
    for (let i = 0; i < combos.length; i++) {
      const combo = combos[i] as { stream: StreamKind; sink: SinkType };
      const share = Math.max(1, Math.floor(opts.faults / combos.length) + (i < opts.faults % combos.length ? 1 : 0));
      const rnd = master.fork(`${combo.stream}/${combo.sink}`);
      const result = await runScenario({ ...combo, index: i, faults: share, rnd, opts, services, logDir, say }).catch(
        (err: unknown): ScenarioResult => ({
          name: `${combo.stream}->${combo.sink}`, stream: combo.stream, sink: combo.sink, mode: 'run', writers: 0, consistency: 'eventual', seed: opts.seed, ok: false,
          failures: [`harness error while setting up: ${(err as Error).stack ?? String(err)}`], notes: [], faults: [], rowsCompared: 0, auditRows: 0,
          diffs: [], workload: emptyStats(), durationMs: 0, convergeMs: 0, logDir,
        }),
      );
      scenarios.push(result);
    }
  } finally {
    await services.stop().catch(() => undefined);
  }
  const ok = scenarios.every((s) => s.ok);
  const result: ChaosResult = { seed: opts.seed, ok, scenarios, durationMs: Date.now() - began, logDir };
  for (const l of summary(result)) say(l);
  await new Promise((r) => chaosLog.end(r));
  if (ok && !opts.keepLogs) rmSync(logDir, { recursive: true, force: true });
  return result;
}

export function summary(r: ChaosResult): string[] {
  const out = ['', `chaos summary: seed ${r.seed}, ${r.ok ? 'PASSED' : 'FAILED'} in ${(r.durationMs / 1000).toFixed(0)} s`];
  let faults = 0;
  let rows = 0;
  for (const s of r.scenarios) {
    faults += s.faults.length;
    rows += s.rowsCompared;
    const kinds = s.faults.reduce<Record<string, number>>((m, f) => ((m[f.kind] = (m[f.kind] ?? 0) + 1), m), {});
    out.push(
      `  ${s.ok ? 'ok  ' : 'FAIL'} ${s.name} (${s.mode}, ${s.consistency}, ${s.writers} writer${s.writers === 1 ? '' : 's'}): ${s.faults.length} faults survived ${JSON.stringify(kinds)}, ${s.rowsCompared} rows compared, ${s.auditRows} row versions audited, ` +
        `${s.workload.committed} txns (${s.workload.largeTransactions} large, ${s.workload.ddl} DDL, ${s.workload.savepointRollbacks} savepoint rollbacks, ${s.workload.truncates} truncates, ${s.workload.keyChanges} key changes; ` +
        `rolled back by contention: ${s.workload.deadlocks} deadlocks, ${s.workload.serializationFailures} serialization failures, ${s.workload.uniqueViolations} unique violations), ` +
        `converged ${(s.convergeMs / 1000).toFixed(1)} s after the workload, ${(s.durationMs / 1000).toFixed(0)} s`,
    );
    for (const f of s.failures) out.push(`       ${f.split('\n').join('\n       ')}`);
    for (const nt of s.notes) out.push(`       note: ${nt}`);
  }
  out.push(`  total: ${faults} faults, ${rows} rows compared, seed ${r.seed}${r.ok ? '' : `; logs kept in ${r.logDir}`}`);
  return out;
}

interface ScenarioArgs {
  stream: StreamKind;
  sink: SinkType;
  index: number;
  faults: number;
  rnd: Prng;
  opts: ChaosOptions;
  services: Services;
  logDir: string;
  say: (l: string) => void;
}

async function runScenario(a: ScenarioArgs): Promise<ScenarioResult> {
  const { stream, sink, opts, rnd, services } = a;
  const began = Date.now();
  const name = `syncline_chaos_${process.pid}_${a.index}`;
  const dir = path.join(a.logDir, `${a.index}-${stream}-${sink}`);
  mkdirSync(dir, { recursive: true });
  const mode: 'run' | 'split' = opts.mode === 'mixed' ? (rnd.chance(0.5) ? 'run' : 'split') : opts.mode;
  // Drawn whatever the options say, so that a seed's fault schedule does not depend on them.
  const drawnWriters = rnd.int(1, 4);
  const drawnConsistency: Consistency = rnd.chance(0.5) ? 'eventual' : 'transactional';
  const writers = opts.writers ?? drawnWriters;
  const consistency: Consistency = opts.consistency === undefined || opts.consistency === 'mixed' ? drawnConsistency : opts.consistency;
  const label = `${stream}->${sink}`;
  const t0 = Date.now();
  const say = (l: string): void => a.say(`[${new Date().toISOString()} +${((Date.now() - t0) / 1000).toFixed(1)}s ${label}] ${l}`);
  const failures: string[] = [];
  const faults: FaultRecord[] = [];
  const tables: TableSpec[] = TABLES.filter((t) => t.name === 'items' || opts.features.has(t.name as Feature));
  const sourceAdmin = opts.sourceAdminUrl ?? SOURCE_ADMIN;
  const mysqlAdmin = opts.mysqlAdminUrl ?? MYSQL_ADMIN;
  say(`scenario ${name}: mode ${mode}, sink.consistency ${consistency}, ${writers} writer${writers === 1 ? '' : 's'}, ${a.faults} faults, tables ${tables.map((t) => t.name).join(', ')}, logs ${dir}`);

  // Source on the machine's PostgreSQL 15.
  await dropDatabases(sourceAdmin, [`${name}_source`]);
  const admin = new pg.Client({ connectionString: sourceAdmin });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}_source`);
  await admin.end();
  const sourceUrl = dbUrl(sourceAdmin, `${name}_source`);
  const source = new pg.Client({ connectionString: sourceUrl });
  await source.connect();
  await source.query("SET TimeZone = 'UTC'");
  await source.query(sourceDdl(tables));

  // Target (and the dead-letter database for sinks that cannot hold it).
  const tpg = await services.targetPg();
  let sinkUrl: string;
  let deadLetterUrl: string | undefined;
  let openTarget: () => Promise<Target>;
  let cleanupTarget: () => Promise<void>;
  if (sink === 'postgres') {
    await dropDatabases(tpg.url('postgres'), [name]);
    await createDatabase(tpg.url('postgres'), name);
    sinkUrl = tpg.url(name);
    const c = new pg.Client({ connectionString: sinkUrl });
    await c.connect();
    await c.query(postgresTargetDdl(tables));
    await c.end();
    openTarget = () => postgresTarget(sinkUrl);
    cleanupTarget = () => dropDatabases(tpg.url('postgres'), [name]);
  } else {
    await dropDatabases(tpg.url('postgres'), [`${name}_dlq`]);
    await createDatabase(tpg.url('postgres'), `${name}_dlq`);
    deadLetterUrl = tpg.url(`${name}_dlq`);
    if (sink === 'mysql') {
      const m = await mysql.createConnection({ uri: mysqlAdmin });
      await m.query(`DROP DATABASE IF EXISTS ${name}`);
      await m.query(`CREATE DATABASE ${name} CHARACTER SET utf8mb4`);
      await m.query(`USE ${name}`);
      for (const s of mysqlTargetDdl(tables)) await m.query(s);
      await m.end();
      sinkUrl = dbUrl(mysqlAdmin, name);
      openTarget = () => mysqlTarget(sinkUrl);
      cleanupTarget = async () => {
        const m2 = await mysql.createConnection({ uri: mysqlAdmin });
        await m2.query(`DROP DATABASE IF EXISTS ${name}`);
        await m2.end();
        await dropDatabases(tpg.url('postgres'), [`${name}_dlq`]);
      };
    } else {
      const file = path.join(dir, 'target.db');
      const db = new Database(file);
      db.pragma('journal_mode = WAL');
      db.exec(sqliteTargetDdl(tables));
      db.close();
      sinkUrl = `sqlite://${file}`;
      openTarget = () => sqliteTarget(file);
      cleanupTarget = () => dropDatabases(tpg.url('postgres'), [`${name}_dlq`]);
    }
  }

  // The stream.
  let streamYaml: string;
  if (stream === 'embedded') streamYaml = `{ broker: embedded, path: ${path.join(dir, 'stream')}, partitions: 4, batch_size: 500 }`;
  else if (stream === 'kafka') streamYaml = `{ broker: kafka, brokers: ['${(await services.kafkaBroker()).brokers}'], topic: ${name.replace(/_/g, '-')}, partitions: 4, batch_size: 500 }`;
  else streamYaml = `{ broker: nats, url: ${(await services.natsServer()).url}, topic: ${name.replace(/_/g, '-')}, partitions: 4, batch_size: 500 }`;

  const config = async (role: string): Promise<string> => {
    const file = path.join(dir, `${role}.yaml`);
    writeFileSync(
      file,
      `source:
  url: ${sourceUrl}
  logical_decoding_work_mem: 64kB
  spill_dir: ${path.join(dir, `spill-${role}`)}
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [${tables.map((t) => t.name).join(', ')}] }]
stream: ${streamYaml}
consumer: { group_id: chaos-${name}, batch_size: 200, retry: { backoff_base_ms: 50, backoff_max_ms: 1000 } }
sink: { type: ${sink}, url: '${sinkUrl}', consistency: ${consistency} }
dead_letter: { ${deadLetterUrl ? `url: '${deadLetterUrl}', ` : ''}topic: ${name.replace(/_/g, '-')}-dlq }
monitoring: { port: ${await freePort()} }
`,
    );
    return file;
  };

  const procs: Proc[] = [];
  const unexpected = (p: Proc, code: number | null, signal: NodeJS.Signals | null, log: string): void => {
    const msg = `${p.role} exited by itself (code ${code}, signal ${signal}); log ${log}:\n${tail(log, 30).split('\n').filter((l) => !/^\s+at |^\s*\[\.\.\.|^\s*$/.test(l)).slice(-6).join('\n')}`;
    failures.push(`unexpected exit: ${msg}`);
    say(`UNEXPECTED: ${msg}`);
    // A supervisor restarts it, so the run goes on and shows what else happens.
    setTimeout(() => {
      if (!stopping && !p.alive) p.start();
    }, 1000);
  };
  let stopping = false;
  const notes: string[] = [];
  /** SIGTERM must drain and exit 0; dying of the signal itself is noted (it happens while a process starts). */
  const judgeTerm = (what: string, end: Awaited<ReturnType<Proc['term']>>, log: string): void => {
    if (end === undefined) return;
    if (end === 'timeout') failures.push(`${what} did not exit within 45 s; killed (log ${log})`);
    else if (end.signal !== null) {
      notes.push(`${what} died of ${end.signal} ${(end.upMs / 1000).toFixed(1)} s after it started, without draining (log ${log})`);
    } else if (end.code !== 0) failures.push(`${what} exited ${end.code} (log ${log}):\n${tail(log, 6)}`);
  };
  if (mode === 'run') procs.push(new Proc('run', opts.cli, await config('run'), dir, unexpected));
  else {
    procs.push(new Proc('capture', opts.cli, await config('capture'), dir, unexpected));
    procs.push(new Proc('apply', opts.cli, await config('apply'), dir, unexpected));
  }
  for (const p of procs) p.start();

  let workload: ChaosWorkload | undefined;
  const writerClients: pg.Client[] = [];
  /** The writers' backends, spared by the 'cut' fault. */
  const writerPids: number[] = [];
  let rowsCompared = 0;
  let auditRows = 0;
  let diffs: TableDiff[] = [];
  let convergeMs = 0;
  try {
    await waitFor('the slot to stream', async () => (await source.query('SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1', [name])).rowCount === 1, 90_000);
    say('slot is streaming; workload starts');
    for (let w = 0; w < writers; w++) {
      const c = new pg.Client({ connectionString: sourceUrl });
      writerClients.push(c);
      await c.connect();
      // A deadlock is found (and its victim rolled back) after 1 s by default: sooner keeps the writers busy.
      await c.query("SET TimeZone = 'UTC'; SET deadlock_timeout = '200ms'");
      writerPids.push((await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid ?? 0);
    }
    workload = new ChaosWorkload(writerClients, rnd.fork('workload'), opts.features, say);
    workload.start(opts.paceMs ?? 15);
    const workloadStart = Date.now();

    const frnd = rnd.fork('faults');
    const kinds: Partial<Record<FaultKind, number>> = {};
    if (opts.faultKinds.has('kill9')) kinds.kill9 = 35;
    if (opts.faultKinds.has('sigterm')) kinds.sigterm = 20;
    if (opts.faultKinds.has('broker') && stream !== 'embedded') kinds.broker = 15;
    if (opts.faultKinds.has('target') && sink === 'postgres') kinds.target = 15;
    if (opts.faultKinds.has('snapshot') && opts.features.has('snapshot')) kinds.snapshot = 12;
    if (opts.faultKinds.has('cut')) kinds.cut = 10;
    if (Object.keys(kinds).length === 0) kinds.kill9 = 1;
    const gap = opts.durationMs ? opts.durationMs / a.faults : undefined;
    for (let n = 1; n <= a.faults; n++) {
      await sleep(gap ?? frnd.int(1500, 5000));
      const kind = frnd.weighted(kinds);
      const start = Date.now();
      let detail = '';
      const down = frnd.int(0, 2000);
      const victim = frnd.pick(procs);
      if (kind === 'kill9' || kind === 'sigterm') {
        const pid = victim.child?.pid;
        if (kind === 'kill9') await victim.kill9();
        else {
          const end = await victim.term(45_000);
          judgeTerm(`fault ${n}: SIGTERM of ${victim.role} (pid ${pid})`, end, victim.logFile);
          detail = end === undefined ? 'it was not running, ' : end === 'timeout' ? 'no exit within 45 s, killed, ' : `exit ${end.code ?? end.signal} after ${(end.upMs / 1000).toFixed(1)} s up, `;
        }
        await sleep(down);
        victim.start();
        detail = `${kind === 'kill9' ? 'kill -9' : 'SIGTERM'} ${victim.role} (pid ${pid}), ${detail}restarted after ${down} ms down`;
      } else if (kind === 'broker') {
        if (stream === 'kafka') await (await services.kafkaBroker()).restart(down);
        else await (await services.natsServer()).restart(down);
        detail = `${stream} broker stopped, started again after ${down} ms`;
      } else if (kind === 'target') {
        const m = frnd.chance(0.5) ? 'fast' : 'immediate';
        await tpg.restart(m, down);
        detail = `target PostgreSQL stopped -m ${m}, started again after ${down} ms`;
      } else if (kind === 'cut') {
        // Every connection syncline holds to the source ends at once (its replication stream,
        // the admin, leader-lock, row and snapshot readers, idle or not), as a network cut, a
        // failover's proxy or a DBA's pg_terminate_backend would; the workload's are spared.
        const r = await source.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> ALL($1::int[]) AND pid <> pg_backend_pid()', [writerPids]);
        detail = `${r.rowCount ?? 0} source connections of syncline ended (pg_terminate_backend)`;
      } else {
        const t = frnd.pick(tables).name;
        const cfg = path.join(dir, `${procs[0]?.role ?? 'run'}.yaml`);
        const r = await run(process.execPath, [opts.cli, 'snapshot', t, '-c', cfg, '--no-wait', '--json'], { encoding: 'utf8' }).catch((e: unknown) => ({ stdout: `failed: ${(e as Error).message}` }));
        detail = `syncline snapshot ${t} while it is written: ${r.stdout.trim()}`;
      }
      const rec: FaultRecord = { n, at: new Date(start).toISOString(), offsetMs: start - t0, kind, detail, tookMs: Date.now() - start };
      faults.push(rec);
      say(`fault ${n}/${a.faults} ${kind}: ${detail} (${rec.tookMs} ms)`);
    }
    await sleep(frnd.int(500, 3000));
    await workload.stop();
    say(`workload stopped: ${JSON.stringify({ ...workload.stats, errors: workload.stats.errors.length, perWriter: workload.perWriter() })}`);
    for (const e of workload.stats.errors.slice(0, 5)) say(`  workload error (harness, not syncline): ${e}`);

    // Convergence: snapshot jobs finished, then the target equal to the source.
    const convergeStart = Date.now();
    // Several writers on a small machine write faster than apply keeps up (8 writers for 76 s
    // took 170 s to apply, still moving): the wait grows with what was written.
    const timeout = opts.convergeTimeoutMs ?? Math.max(240_000, 4 * (convergeStart - workloadStart));
    say(`waiting up to ${(timeout / 1000).toFixed(0)} s for the target to equal the source`);
    const stallMs = Math.min(60_000, timeout);
    await waitFor('snapshot jobs to finish', async () => {
      const r = await source.query<{ status: string; n: string }>("SELECT status, count(*) AS n FROM syncline.snapshots WHERE status IN ('pending', 'running') GROUP BY status").catch(() => ({ rows: [] }));
      return r.rows.length === 0;
    }, timeout).catch((e: unknown) => failures.push(String(e)));
    const failed = await source.query<{ table_name: string; error: string }>("SELECT table_name, error FROM syncline.snapshots WHERE status = 'failed'").catch(() => ({ rows: [] }));
    for (const f of failed.rows) failures.push(`snapshot job of ${f.table_name} failed: ${f.error}`);
    const target = await openTarget();
    try {
      let last = 0;
      let previous = '';
      let sameSince = Date.now();
      for (;;) {
        diffs = [];
        for (const t of tables) diffs.push(await diffTable(source, target, t));
        if (diffs.every(isEqual)) break;
        if (Date.now() - convergeStart > timeout) {
          say(`timed out after ${(timeout / 1000).toFixed(0)} s with the difference still changing (apply behind, or flapping); --converge-timeout waits longer`);
          break;
        }
        // A difference that has not moved for a while will not go away by waiting longer.
        const now = JSON.stringify(diffs);
        if (now !== previous) {
          previous = now;
          sameSince = Date.now();
        } else if (Date.now() - sameSince > stallMs) {
          say(`the difference has not changed for ${stallMs / 1000} s; giving up waiting`);
          break;
        }
        if (Date.now() - last > 15_000) {
          last = Date.now();
          say(`waiting for convergence: ${diffs.filter((d) => !isEqual(d)).map((d) => `${d.table} ${d.sourceRows}/${d.targetRows}`).join(', ')}`);
          for (const p of procs) if (!p.alive && !stopping) say(`note: ${p.role} is not running`);
        }
        await sleep(1000);
      }
      convergeMs = Date.now() - convergeStart;
      rowsCompared = diffs.reduce((s, d) => s + d.sourceRows, 0);
      for (const d of diffs.filter((x) => !isEqual(x))) {
        failures.push(
          `${d.table}: target differs from source after ${(convergeMs / 1000).toFixed(0)} s (source ${d.sourceRows} rows, target ${d.targetRows})\n` +
            `  missing at target (first): ${d.missing.join('\n    ')}\n  only at target (first): ${d.extra.join('\n    ')}`,
        );
      }
      const doubles = await target.doubles();
      auditRows = await target.auditRows();
      for (const d of doubles) failures.push(`version written ${d.n} times at the target: ${d.tbl} key ${String(d.row_key).slice(0, 120)} lsn ${d.lsn} seq ${d.seq}`);
    } finally {
      await target.close();
    }
    // Dead-lettered changes: the workload has no bad input, so every entry is a failure.
    const cfg = path.join(dir, `${procs[procs.length - 1]?.role ?? 'run'}.yaml`);
    const dlq = await run(process.execPath, [opts.cli, 'dlq', 'list', '-c', cfg, '--json'], { encoding: 'utf8' }).catch((e: unknown) => ({ stdout: `[]`, stderr: String(e) }));
    try {
      const parsed = JSON.parse(dlq.stdout) as unknown;
      const entries = Array.isArray(parsed) ? parsed : ((parsed as { entries?: unknown[] }).entries ?? []);
      if (entries.length > 0) failures.push(`dead-letter queue holds ${entries.length} entries, first: ${JSON.stringify(entries[0]).slice(0, 600)}`);
    } catch {
      say(`dlq list printed no JSON: ${dlq.stdout.slice(0, 200)}`);
    }
    say(`compared ${rowsCompared} rows in ${tables.length} tables: ${diffs.every(isEqual) ? 'identical' : 'DIFFERENT'}; ${auditRows} audited row versions`);
  } catch (err) {
    failures.push(`harness error: ${(err as Error).stack ?? String(err)}`);
  } finally {
    stopping = true;
    if (workload) await workload.stop().catch(() => undefined);
    for (const c of writerClients) await c.end().catch(() => undefined);
    for (const p of procs) {
      judgeTerm(`final SIGTERM of ${p.role}`, await p.term(45_000), p.logFile);
    }
    await source.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1', [name]).catch((e: unknown) => say(`could not drop slot ${name}: ${String(e)}`));
    await source.end().catch(() => undefined);
    if (failures.length === 0 && !opts.keepLogs) {
      await dropDatabases(sourceAdmin, [`${name}_source`]);
      await cleanupTarget().catch(() => undefined);
    } else if (failures.length > 0) {
      say(`kept for inspection: source database ${name}_source, target ${sink === 'postgres' ? `database ${name} on the harness's target PostgreSQL (stopped at the end of the run; its data in ${path.join(a.logDir, 'target-pg')})` : sinkUrl}`);
    }
  }
  const ok = failures.length === 0;
  say(`${ok ? 'PASSED' : 'FAILED'}: ${faults.length} faults; ${ok ? '' : failures.join('\n')}`);
  return { name: label, stream, sink, mode, writers, consistency, seed: opts.seed, ok, failures, notes, faults, rowsCompared, auditRows, diffs, workload: workload?.stats ?? emptyStats(writers), durationMs: Date.now() - began, convergeMs, logDir: dir };
}

async function createDatabase(adminUrl: string, db: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE ${db}`);
  } finally {
    await c.end();
  }
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await sleep(250);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
