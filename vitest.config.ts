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
    // Integration tests share one PostgreSQL server and the machine has 2 cores:
    // files run one at a time so timings and slot usage stay predictable.
    fileParallelism: false,
    reporters: ['default'],
  },
});
