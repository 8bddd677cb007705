// Red-team repros: NOT part of the suite (the main config includes test/**/*.test.ts only;
// these files end in .redteam.ts). Run: npx vitest run --config test/redteam/vitest.config.ts
import { defineConfig, mergeConfig } from 'vitest/config';
import base from '../../vitest.config.js';

export default mergeConfig(base, defineConfig({ test: { include: ['test/redteam/**/*.redteam.ts'] } }), );
