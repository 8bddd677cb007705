import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration tests share one PostgreSQL server and the machine has 2 cores:
    // files run one at a time so timings and slot usage stay predictable.
    fileParallelism: false,
    reporters: ['default'],
  },
});
