import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt, runCli } from '../helpers/cli.js';
import { freshDatabase, machinePg15, withClient } from '../helpers/postgres.js';

const listen = (port = 0): Promise<Server> =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
const portOf = (s: Server): number => (s.address() as { port: number }).port;

// Capture and apply apart, from one config on one host, each need their own metrics port.
describe('monitoring port of several processes of one config', () => {
  let dir: string;
  let busy: Server;
  let config: string;

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-metrics-port-'));
    busy = await listen();
    const url = await freshDatabase(await machinePg15(), 'syncline_metrics_port');
    await withClient(url, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text)'));
    config = path.join(dir, 'sync.yaml');
    await writeFile(
      config,
      `source:
  url: ${url}
  slots: [{ name: syncline_metrics_port, publication: syncline_metrics_port_pub, tables: [items] }]
stream: { path: ${path.join(dir, 'stream')} }
sink: { url: ${url} }
monitoring: { port: ${portOf(busy)} }
`,
    );
  }, 120_000);

  afterAll(async () => {
    busy?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a port in use ends the process (exit 1) with the fix instead of a bare EADDRINUSE', async () => {
    const r = await runCli('apply', '-c', config);
    expect(r.code).toBe(1);
    expect(r.stderr + r.stdout).toMatch(new RegExp(`monitoring: 127\\.0\\.0\\.1:${portOf(busy)} is already in use`));
    expect(r.stderr + r.stdout).toMatch(/--metrics-port N on run, capture and apply/);
  }, 60_000);

  it('--metrics-port serves /metrics on the given port instead of monitoring.port', async () => {
    const free = await listen();
    const port = portOf(free);
    await new Promise((r) => free.close(r));
    const child = spawn(process.execPath, [CLI, 'apply', '-c', config, '--metrics-port', String(port)], { stdio: 'ignore' });
    try {
      let body = '';
      for (let i = 0; i < 150 && !body.includes('sync_'); i++) {
        body = await fetch(`http://127.0.0.1:${port}/metrics`).then((res) => res.text(), () => '');
        if (!body) await new Promise((r) => setTimeout(r, 200));
      }
      expect(body).toMatch(/^# HELP sync_/m);
    } finally {
      child.kill('SIGTERM');
      expect(await new Promise((r) => child.once('exit', (code) => r(code)))).toBe(0);
    }
  }, 60_000);
});
