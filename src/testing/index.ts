/**
 * `syncline/testing`: in-memory fakes for unit tests of code built on syncline. Both pass
 * the contract suites the real adapters pass (`syncline/testing/vitest`).
 */
export { MemorySink, type MemorySinkOptions } from './memory-sink.js';
export { MemoryStream } from './memory-stream.js';
