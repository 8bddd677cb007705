// Moved to src/testing/stream-contract.ts (issue 11: shipped as syncline/testing/vitest so users
// can run it against their own streams). Edit it there; tests keep importing it from here.
export * from '../../src/testing/stream-contract.js';
