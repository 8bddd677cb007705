import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { SynclineConfig } from '../config/schema.js';
import { errorMessage } from '../core/errors.js';
import type { CheckList } from './report.js';

/**
 * Checks that the configured stream can be reached. Embedded: the directory is writable or
 * creatable and its partition count matches. Kafka/NATS: a TCP connection to each address
 * (2 s), which shows the address is right without joining any consumer group.
 */
export async function checkStream(config: SynclineConfig, baseDir: string, list: CheckList): Promise<void> {
  const s = config.stream;
  switch (s.broker) {
    case 'embedded':
      await checkEmbedded(path.resolve(baseDir, s.path), s.partitions, list);
      return;
    case 'kafka': {
      const brokers = s.brokers ?? [];
      if (brokers.length === 0) {
        list.fail('stream (kafka)', 'no broker addresses configured', 'set stream.brokers: [host:port, ...] or SYNCLINE_STREAM_BROKERS=host:port,...');
        return;
      }
      await checkAddresses('stream (kafka)', brokers, 9092, list);
      return;
    }
    case 'nats': {
      if (!s.url) {
        list.fail('stream (nats)', 'no server URL configured', 'set stream.url (e.g. nats://127.0.0.1:4222) or SYNCLINE_STREAM_URL');
        return;
      }
      await checkAddresses('stream (nats)', natsServerUrls(s.url), 4222, list);
      return;
    }
  }
}

async function checkEmbedded(dir: string, partitions: number, list: CheckList): Promise<void> {
  const check = 'stream (embedded)';
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch {
    // Missing: the nearest existing parent must let us create it.
    let parent = path.dirname(dir);
    for (;;) {
      try {
        await stat(parent);
        break;
      } catch {
        const up = path.dirname(parent);
        if (up === parent) break;
        parent = up;
      }
    }
    try {
      await access(parent, constants.W_OK | constants.X_OK);
      list.ok(check, `${dir} does not exist yet; it will be created (${parent} is writable)`);
    } catch {
      list.fail(check, `${dir} does not exist and ${parent} is not writable by this user`, `create it (mkdir -p ${dir}) and give this user write access, or set stream.path to a writable directory`);
    }
    return;
  }
  if (!isDir) {
    list.fail(check, `${dir} exists but is not a directory`, 'set stream.path to a directory');
    return;
  }
  try {
    await access(dir, constants.W_OK | constants.X_OK);
  } catch {
    list.fail(check, `${dir} is not writable by this user`, `give this user write access (chown/chmod ${dir}), or set stream.path to a writable directory`);
    return;
  }
  let stored: number | undefined;
  try {
    const meta = JSON.parse(await readFile(path.join(dir, 'meta.json'), 'utf8')) as { partitions?: unknown };
    if (typeof meta.partitions === 'number') stored = meta.partitions;
  } catch {
    stored = undefined;
  }
  if (stored !== undefined && stored !== partitions) {
    list.fail(
      check,
      `${dir} holds a stream of ${stored} partitions but stream.partitions is ${partitions}`,
      `set stream.partitions: ${stored} (an embedded stream's partition count is fixed), or point stream.path at a new directory`,
    );
    return;
  }
  list.ok(check, `${dir} is writable${stored === undefined ? ' (empty: will be initialised)' : `, ${stored} partitions`}`);
}

async function checkAddresses(check: string, addresses: readonly string[], defaultPort: number, list: CheckList): Promise<void> {
  const results = await Promise.all(
    addresses.map(async (a) => {
      const { host, port } = hostPort(a, defaultPort);
      try {
        await tcpConnect(host, port, 2000);
        return { a: `${host}:${port}`, error: undefined };
      } catch (err) {
        return { a: `${host}:${port}`, error: errorMessage(err) };
      }
    }),
  );
  const down = results.filter((r) => r.error !== undefined);
  const up = results.filter((r) => r.error === undefined).map((r) => r.a);
  const downText = down.map((r) => `${r.a} (${r.error ?? ''})`).join(', ');
  if (down.length === 0) list.ok(check, `TCP connect to ${up.join(', ')} succeeded`);
  else if (up.length > 0) list.warn(check, `reachable: ${up.join(', ')}; not reachable: ${downText}`, 'check the unreachable addresses in the configuration and that those servers run');
  else list.fail(check, `no configured address is reachable: ${downText}`, 'check the addresses in the configuration, that the servers run, and that no firewall blocks them');
}

/** The server URLs of a `stream.url` (NATS takes a comma-separated list). */
export function natsServerUrls(url: string): string[] {
  return url.split(',').map((u) => u.trim()).filter((u) => u.length > 0);
}

/** `host:port`, `scheme://user:pass@host:port`, `[v6]:port`; the port defaults per broker. */
export function hostPort(address: string, defaultPort: number): { host: string; port: number } {
  let text = address;
  try {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
      const u = new URL(text);
      return { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port ? Number(u.port) : defaultPort };
    }
  } catch {
    // Not a URL: parse as host:port below.
  }
  text = text.replace(/^.*@/, '');
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text);
  if (!m) return { host: text, port: defaultPort };
  return { host: m[1] ?? text, port: m[2] ? Number(m[2]) : defaultPort };
}

export function tcpConnect(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no connection within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.end();
      socket.destroy();
      resolve();
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}
