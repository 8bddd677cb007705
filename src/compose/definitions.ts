import type { SynclineConfig } from '../config/schema.js';
import type { DefinitionLookup, RecordedColumn } from '../core/schema-evolution.js';
import { targetColumnOf, type TableMapping } from '../core/table-mapping.js';
import { readDefinitions } from '../source/schema-version-store.js';
import { withSource } from './source-connection.js';

/**
 * The source's recorded table definitions (`<source.state_schema>.schema_versions`), asked
 * by target table name: a `sink.tables` route leads back to its source table, and its
 * columns take their target names (excluded ones left out).
 */
export function sourceDefinitions(config: SynclineConfig, mapping: TableMapping): DefinitionLookup {
  const slots = config.source.slots.map((s) => s.name);
  return {
    history: (schema, table) =>
      withSource(config, async (c) => {
        const route = mapping.routeTo({ schema, table });
        const defs = await readDefinitions(c, config.source.state_schema, slots, route?.source ?? { schema, table });
        if (!route) return defs;
        const toTarget = (cols: RecordedColumn[]): RecordedColumn[] =>
          cols.flatMap((col) => {
            const name = targetColumnOf(route, col.name);
            return name === undefined ? [] : [{ ...col, name }];
          });
        return defs.map((d) => ({ version: d.version, columns: d.columns && toTarget(d.columns) }));
      }),
  };
}
