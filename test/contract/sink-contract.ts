// The suite ships with the package (syncline/testing/vitest); tests import it from here.
export * from '../../src/testing/sink-contract.js';
