import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, createWriteStream, existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);

/**
 * Services the chaos harness may restart. It never restarts a shared server: the machine's
 * PostgreSQL 15 (the source, used by everyone's tests), MariaDB, the shared Kafka on 9092
 * and NATS on 4222 stay untouched. Instead the harness runs its own:
 * - a PostgreSQL 15 cluster (initdb under the run's directory, as the `postgres` OS user when
 *   run as root) for the postgres sink's target, restarted with `pg_ctl -m fast|immediate`;
 * - a Kafka broker on its own port through scripts/kafka.sh (KAFKA_PORT, own data dir);
 * - a nats-server with JetStream on a free port and its own store directory.
 */

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const PG_BIN = process.env.SYNCLINE_CHAOS_PG_BIN ?? '/usr/lib/postgresql/15/bin';
const asRoot = process.getuid?.() === 0;

/** Runs a PostgreSQL binary as the `postgres` OS user when we are root (initdb refuses root). */
async function pgTool(tool: string, args: string[]): Promise<string> {
  const bin = path.join(PG_BIN, tool);
  const { stdout } = asRoot ? await run('runuser', ['-u', 'postgres', '--', bin, ...args]) : await run(bin, args);
  return stdout;
}

export class TargetPostgres {
  readonly port: number;
  private readonly data: string;
  private readonly logFile: string;

  private constructor(dir: string, port: number) {
    this.port = port;
    this.data = path.join(dir, 'data');
    this.logFile = path.join(dir, 'postgres.log');
  }

  static async start(dir: string): Promise<TargetPostgres> {
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o755);
    if (asRoot) chownSync(dir, uidOf('postgres'), gidOf('postgres'));
    const t = new TargetPostgres(dir, await freePort());
    await pgTool('initdb', ['-D', t.data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
    await t.startServer();
    return t;
  }

  url(database: string): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  private async startServer(): Promise<void> {
    const opts = `-p ${this.port} -k ${this.data} -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=64MB`;
    await pgTool('pg_ctl', ['-D', this.data, '-l', this.logFile, '-o', opts, '-w', '-t', '60', 'start']);
  }

  /** `fast` (a clean shutdown: clients are disconnected) or `immediate` (a crash and recovery). */
  async restart(mode: 'fast' | 'immediate', downMs: number): Promise<void> {
    await pgTool('pg_ctl', ['-D', this.data, '-m', mode, '-w', '-t', '60', 'stop']);
    await new Promise((r) => setTimeout(r, downMs));
    await this.startServer();
  }

  async stop(): Promise<void> {
    await pgTool('pg_ctl', ['-D', this.data, '-m', 'fast', '-w', '-t', '60', 'stop']).catch(() => undefined);
  }
}

function idOf(flag: '-u' | '-g', user: string): number {
  return Number(execFileSync('id', [flag, user], { encoding: 'utf8' }).trim());
}
const uidOf = (u: string): number => idOf('-u', u);
const gidOf = (u: string): number => idOf('-g', u);

export class NatsServer {
  private child: ChildProcess | undefined;
  readonly port: number;

  private constructor(
    private readonly dir: string,
    port: number,
  ) {
    this.port = port;
  }

  static async start(dir: string): Promise<NatsServer> {
    mkdirSync(path.join(dir, 'store'), { recursive: true });
    const n = new NatsServer(dir, await freePort());
    await n.startServer();
    return n;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  private async startServer(): Promise<void> {
    const log = createWriteStream(path.join(this.dir, 'nats.log'), { flags: 'a' });
    const bin = process.env.SYNCLINE_CHAOS_NATS_SERVER ?? 'nats-server';
    const child = spawn(bin, ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', path.join(this.dir, 'store')], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.child = child;
    await waitUntil(`nats-server on ${this.port}`, () => listening(this.port), 30_000);
  }

  /** A clean stop (SIGTERM: JetStream flushes its store), a pause, and a start on the same store. */
  async restart(downMs: number): Promise<void> {
    await this.stop();
    await new Promise((r) => setTimeout(r, downMs));
    await this.startServer();
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  }
}

/** A Kafka broker of the harness's own (scripts/kafka.sh on another port, own data directory). */
export class KafkaBroker {
  constructor(
    readonly port: number,
    private readonly root: string,
  ) {}

  static async start(root: string, port: number): Promise<KafkaBroker> {
    const k = new KafkaBroker(port, root);
    await k.script('start');
    return k;
  }

  get brokers(): string {
    return `127.0.0.1:${this.port}`;
  }

  private async script(cmd: 'start' | 'stop'): Promise<void> {
    await run('bash', [path.join(this.root, 'scripts/kafka.sh'), cmd], { env: { ...process.env, KAFKA_PORT: String(this.port), KAFKA_CONTROLLER_PORT: String(this.port + 1) }, maxBuffer: 1 << 24 });
  }

  async restart(downMs: number): Promise<void> {
    await this.script('stop');
    await new Promise((r) => setTimeout(r, downMs));
    await this.script('start');
  }

  /** Left running for the next run (it takes ~15 s to start); `bash scripts/kafka.sh stop` with KAFKA_PORT stops it. */
  async stop(): Promise<void> {
    if (process.env.SYNCLINE_CHAOS_STOP_KAFKA === '1') await this.script('stop');
  }

  static exists(root: string, port: number): boolean {
    return existsSync(path.join(root, '.kafka', `broker-${port}`));
  }
}

/** Drops databases (and their inactive slots) on a server, ignoring errors. */
export async function dropDatabases(adminUrl: string, names: string[]): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  try {
    await c.connect();
    for (const n of names) {
      await c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [n]).catch(() => undefined);
      await c.query(`DROP DATABASE IF EXISTS "${n}" WITH (FORCE)`).catch(() => undefined);
    }
  } finally {
    await c.end().catch(() => undefined);
  }
}
