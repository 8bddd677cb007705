import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve('.');

/**
 * The package as users get it: `npm pack`, unpacked into a fresh project's node_modules (its
 * dependencies linked from this checkout's node_modules, so it works offline), then the
 * examples compiled against it with the published `exports` and `.d.ts`, and imported at run time.
 */
describe('the packed package: exports, .d.ts and the examples', () => {
  let dir = '';
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('compiles examples/ against the tarball (syncline, syncline/testing and syncline/testing/vitest types) and loads syncline and syncline/testing', async () => {
    expect(existsSync(path.join(ROOT, 'dist/index.d.ts')), 'run npm run build first (npm test does)').toBe(true);
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-lib11-pack-'));
    const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8' })) as { filename: string; files: { path: string }[] }[];
    const tarball = path.join(dir, packed[0]?.filename ?? '');
    const files = (packed[0]?.files ?? []).map((f) => f.path);
    expect(files).toContain('dist/index.d.ts');
    expect(files).toContain('dist/testing/vitest.d.ts');
    expect(files.some((f) => f.startsWith('src/') || f.startsWith('test/'))).toBe(false);

    const project = path.join(dir, 'app');
    const modules = path.join(project, 'node_modules');
    await mkdir(path.join(modules, 'syncline'), { recursive: true });
    execFileSync('tar', ['-xzf', tarball, '-C', path.join(modules, 'syncline'), '--strip-components=1']);
    for (const name of await readdir(path.join(ROOT, 'node_modules'))) {
      if (name === 'syncline' || name === '.bin' || name.startsWith('.')) continue;
      await symlink(path.join(ROOT, 'node_modules', name), path.join(modules, name));
    }
    await cp(path.join(ROOT, 'examples'), path.join(project, 'examples'), { recursive: true });
    await writeFile(path.join(project, 'package.json'), JSON.stringify({ name: 'app', type: 'module', private: true }));
    await writeFile(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noUncheckedIndexedAccess: true, types: ['node'], skipLibCheck: false, noEmit: true }, include: ['examples/**/*.ts', 'check.ts'] }),
    );
    // Uses the testing entry points too, so their .d.ts are checked.
    await writeFile(
      path.join(project, 'check.ts'),
      `import { createPipeline, loadConfig, type Sink, type ChangeEvent, type Transform } from 'syncline';
import { MemorySink, MemoryStream } from 'syncline/testing';
import type { SinkHarness } from 'syncline/testing/vitest';
const t: Transform = (c: ChangeEvent) => c;
const s: Sink = new MemorySink();
const h: Pick<SinkHarness, 'sink'> = { sink: s };
export { createPipeline, loadConfig, t, h, MemoryStream };
`,
    );
    const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
    const compiled = (() => {
      try {
        return execFileSync(process.execPath, [tsc, '-p', project], { cwd: project, encoding: 'utf8' });
      } catch (err) {
        return `FAILED\n${(err as { stdout?: string }).stdout ?? String(err)}`;
      }
    })();
    expect(compiled).toBe('');

    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const m = await import('syncline'); const t = await import('syncline/testing');
         const s = new t.MemorySink(); await s.prepare();
         const o = await s.apply([], new Map([[0, 1n]]), 'g');
         console.log(typeof m.createPipeline, typeof m.loadConfig, typeof m.maskColumns, String(o.applied), [...(await s.positions('g'))].join());`,
      ],
      { cwd: project, encoding: 'utf8' },
    );
    expect(out.trim()).toBe('function function function 0 0,1');
  }, 120_000);
});
