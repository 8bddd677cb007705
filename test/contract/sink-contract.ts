// Moved to src/testing/sink-contract.ts (issue 11: shipped as syncline/testing/vitest so users
// can run it against their own sinks). Edit it there; tests keep importing it from here.
export * from '../../src/testing/sink-contract.js';
