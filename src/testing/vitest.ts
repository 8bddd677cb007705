/**
 * `syncline/testing/vitest`: the contract suites every Sink and Stream of syncline passes,
 * to run against your own (needs vitest). In a `*.test.ts` file:
 *
 *   describeSinkContract('my sink', async () => ({ sink, createTable, readRow, storesPositions: true, close }));
 */
export {
  ChangeFactory,
  describeKeylessSinkContract,
  describeSinkContract,
  describeSoftDeleteContract,
  KeylessChangeFactory,
  REJECT_VALUE,
  type KeylessRow,
  type KeylessSinkHarness,
  type SinkHarness,
  type SoftDeleteHarness,
  type Ver,
} from './sink-contract.js';
export { describeStreamContract, type OpenStream } from './stream-contract.js';
