import type { SynclineConfig } from '../config/schema.js';
import { parseLsn, type Lsn } from '../core/lsn.js';
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
    // Capture confirms a slot past a change only once the change's definition is stored
    // (BatchPublisher), and a change beyond the source's WAL is not yet written. A slot that
    // is missing or not confirmed yet may be anywhere: then capture may still record it.
    mayStillRecord: (commitLsns) =>
      withSource(config, async (c) => {
        const { rows } = await c.query<{ slots: number; confirmed: string | null; all_confirmed: boolean | null; wal: string | null }>(
          `SELECT count(*)::int AS slots, min(confirmed_flush_lsn)::text AS confirmed, bool_and(confirmed_flush_lsn IS NOT NULL) AS all_confirmed,
                  (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS wal
             FROM pg_catalog.pg_replication_slots WHERE slot_name = ANY($1::text[]) AND database = current_database()`,
          [slots],
        );
        const r = rows[0];
        const confirmed = r && r.slots === slots.length && r.all_confirmed === true ? lsnOrUndefined(r.confirmed) : undefined;
        const wal = lsnOrUndefined(r?.wal ?? null);
        if (confirmed === undefined || wal === undefined) return true;
        // An LSN that is no LSN is no change capture wrote.
        return commitLsns.some((text) => {
          const lsn = lsnOrUndefined(text);
          return lsn !== undefined && lsn >= confirmed && lsn <= wal;
        });
      }),
  };
}

function lsnOrUndefined(text: string | null): Lsn | undefined {
  if (text === null) return undefined;
  try {
    return parseLsn(text);
  } catch {
    return undefined;
  }
}
