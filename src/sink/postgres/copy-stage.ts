import { quoteIdent } from '../../core/sql.js';
import type { TargetTable } from './table-meta.js';

/** A session temporary table that one target's upserts with one column set are COPYed into. */
export interface CopyStage {
  /** `pg_temp."syncline_stage_<n>"`, quoted. */
  name: string;
  /** Creates it if missing. */
  create: string;
}

/**
 * `sink.copy_threshold`: the staging table for each target and column set, a temporary table
 * of the session: every value as text (cast in the merge exactly as the `unnest` path casts),
 * emptied at commit. Created if missing in the same round trip as the COPY, inside the
 * batch's transaction: no per-connection state to lose to a rollback or a pooler that
 * switches sessions.
 */
export class CopyStages {
  private readonly stages = new Map<string, CopyStage>();

  of(target: TargetTable, columns: string[]): CopyStage {
    const key = `${target.qualified}\u0001${columns.join('\u0000')}`;
    let stage = this.stages.get(key);
    if (!stage) {
      const name = `pg_temp.${quoteIdent(`syncline_stage_${this.stages.size + 1}`)}`;
      const cols = [...columns.map((_, i) => `c${i} text`), 'row_key text', 'v_lsn text', 'v_seq integer'];
      stage = { name, create: `CREATE TEMPORARY TABLE IF NOT EXISTS ${name} (${cols.join(', ')}) ON COMMIT DELETE ROWS` };
      this.stages.set(key, stage);
    }
    return stage;
  }
}
