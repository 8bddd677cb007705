import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // examples/ import the package by name: the sources, as in tsconfig.json's paths.
  resolve: {
    alias: [
      { find: /^syncline$/, replacement: fileURLToPath(new URL('./src/index.ts', import.meta.url)) },
      { find: /^syncline\/testing$/, replacement: fileURLToPath(new URL('./src/testing/index.ts', import.meta.url)) },
      { find: /^syncline\/testing\/vitest$/, replacement: fileURLToPath(new URL('./src/testing/vitest.ts', import.meta.url)) },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // One run id for the names every file makes unique (test/helpers/unique.ts); drops them at the end.
    globalSetup: ['test/setup/global.ts'],
    // After each file: no connection or replication slot of its own left open.
    setupFiles: ['test/setup/leaks.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Files no longer share names (see globalSetup) and may run side by side
    // (`--fileParallelism --maxWorkers=2`: half the time for a handful of integration files).
    // They still run one at a time: several e2e tests measure timings (lag, memory, takeover)
    // on a 2-core machine, and the whole suite has not yet been shown green in parallel.
    fileParallelism: false,
    reporters: ['default'],
  },
});
