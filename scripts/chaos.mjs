#!/usr/bin/env node
// `npm run chaos -- [options]`: compiles the chaos harness (test/chaos, TypeScript) with the
// project's tsc into dist/chaos-harness and runs it against the built CLI (dist/cli/main.js,
// built by the npm script first). `--help` lists the options. Under dist/, not node_modules:
// worktrees that share one node_modules (a symlink) would overwrite each other's harness.
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist/chaos-harness');
try {
  execFileSync(
  process.execPath,
  [
    path.join(root, 'node_modules/typescript/bin/tsc'),
    '--outDir', out, '--rootDir', path.join(root, 'test/chaos'),
    '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2022',
    '--strict', '--noUncheckedIndexedAccess', '--esModuleInterop', '--skipLibCheck', '--types', 'node',
    path.join(root, 'test/chaos/main.ts'),
  ],
  { stdio: 'inherit' },
  );
} catch {
  process.stderr.write('chaos: compiling test/chaos failed (errors above)\n');
  process.exit(2);
}
const r = spawnSync(process.execPath, [path.join(out, 'main.js'), ...process.argv.slice(2)], {
  stdio: 'inherit',
  env: { ...process.env, SYNCLINE_ROOT: root },
});
process.exit(r.status ?? 1);
