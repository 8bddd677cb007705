import { PrerequisiteError } from '../core/errors.js';
import type { SynclineConfig } from './schema.js';

/** One entry of `source.slots`: the slot, its publication and its tables. */
export type SlotConfig = SynclineConfig['source']['slots'][number];

/**
 * The replication slot this process captures from. The schema allows exactly one
 * (`source.slots` has one entry per process for now), so every caller reads it here.
 */
export function slotOf(config: SynclineConfig): SlotConfig {
  const slot = config.source.slots[0];
  if (!slot) throw new PrerequisiteError('no replication slot configured', 'add source.slots[0] with name and publication');
  return slot;
}
