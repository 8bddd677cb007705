import { quoteIdent } from '../../core/sql.js';
import { stagedType, type TargetColumn, type TargetTable } from './table-meta.js';

/** A session temporary table that one target's upserts with one column set are COPYed into. */
export interface CopyStage {
  /** `pg_temp."syncline_stage_<n>"`, quoted. */
  name: string;
  /** Creates it if missing. */
  create: string;
}

/**
 * `sink.copy_threshold`: the staging table for each target and column set, a temporary table
 * of the session, emptied at commit. Its columns have the target columns' types (see
 * `stagedType`): COPY parses each value once, straight into its type, instead of storing
 * text that the merge casts again (about a sixth of the server's CPU per row). Created if
 * missing in the same round trip as the COPY, inside the batch's transaction: no
 * per-connection state to lose to a rollback or a pooler that switches sessions.
 */
export class CopyStages {
  private readonly stages = new Map<string, CopyStage>();
  /** Names are never reused: a session may still hold a stage of types since changed. */
  private made = 0;

  of(target: TargetTable, columns: string[]): CopyStage {
    const key = `${target.qualified}\u0001${columns.join('\u0000')}`;
    let stage = this.stages.get(key);
    if (!stage) {
      const name = `pg_temp.${quoteIdent(`syncline_stage_${++this.made}`)}`;
      const types = columns.map((c) => stagedType(target.columns.get(c) as TargetColumn));
      const cols = [...types.map((t, i) => `c${i} ${t}`), 'row_key text', 'v_lsn pg_lsn', 'v_seq integer'];
      stage = { name, create: `CREATE TEMPORARY TABLE IF NOT EXISTS ${name} (${cols.join(', ')}) ON COMMIT DELETE ROWS` };
      this.stages.set(key, stage);
    }
    return stage;
  }

  /** The target's columns may have changed type: later batches stage into new tables. */
  clear(): void {
    this.stages.clear();
  }
}
