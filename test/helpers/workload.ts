import pg from 'pg';

/** Tables used by the pipeline tests, created identically on source and target. */
export const WORKLOAD_DDL = `
  CREATE TABLE items (
    id integer PRIMARY KEY, grp integer NOT NULL, val text, amount numeric(12,3),
    big bigint, ratio double precision, flags boolean[], updated_at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE "Mixed Case" (
    "Key" text PRIMARY KEY, "Value" jsonb, note varchar(40));
  -- Before images for every change; the primary key must stay the row's key.
  ALTER TABLE "Mixed Case" REPLICA IDENTITY FULL;`;

export const WORKLOAD_TABLES = ['items', '"Mixed Case"'];

/**
 * Counts every row version written at the target, so a test can assert that no change was
 * applied twice (the same version written twice shows up as a duplicate audit row).
 * Installed before the pipeline starts — creating triggers while apply writes can deadlock —
 * so the version columns the sink would add are added here first.
 */
export async function installApplyAudit(target: pg.Client): Promise<void> {
  await target.query(`
    ALTER TABLE items ADD COLUMN _syncline_lsn pg_lsn, ADD COLUMN _syncline_seq integer;
    ALTER TABLE "Mixed Case" ADD COLUMN _syncline_lsn pg_lsn, ADD COLUMN _syncline_seq integer;
    CREATE TABLE apply_audit (tbl text, row_key text, op text, lsn pg_lsn, seq integer);
    CREATE FUNCTION audit_apply() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        INSERT INTO apply_audit VALUES (TG_TABLE_NAME, row_to_json(OLD)->>(TG_ARGV[0]), 'D', OLD._syncline_lsn, OLD._syncline_seq);
        RETURN OLD;
      END IF;
      INSERT INTO apply_audit VALUES (TG_TABLE_NAME, row_to_json(NEW)->>(TG_ARGV[0]), left(TG_OP, 1), NEW._syncline_lsn, NEW._syncline_seq);
      RETURN NEW;
    END $$;
    CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON items FOR EACH ROW EXECUTE FUNCTION audit_apply('id');
    CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON "Mixed Case" FOR EACH ROW EXECUTE FUNCTION audit_apply('Key');`);
}

/** Versions written more than once at the target (must be none). */
export async function doubleApplied(target: pg.Client): Promise<{ tbl: string; row_key: string; lsn: string; seq: number; n: number }[]> {
  const { rows } = await target.query(
    `SELECT tbl, row_key, lsn::text, seq, count(*)::int AS n FROM apply_audit WHERE op <> 'D'
      GROUP BY tbl, row_key, lsn, seq HAVING count(*) > 1 LIMIT 10`,
  );
  return rows;
}

/** Mixed INSERT/UPDATE/DELETE transactions, including key updates and multi-row statements. */
export class Workload {
  changes = 0;
  private nextId = 1;
  private readonly live: number[] = [];

  constructor(private readonly db: pg.Client) {}

  async transaction(): Promise<void> {
    const size = 1 + Math.floor(Math.random() * 15);
    await this.db.query('BEGIN');
    for (let i = 0; i < size; i++) await this.step();
    await this.db.query('COMMIT');
  }

  private pick(): number | undefined {
    return this.live[Math.floor(Math.random() * this.live.length)];
  }

  private async step(): Promise<void> {
    const dice = Math.random();
    if (dice < 0.4 || this.live.length < 10) {
      const id = this.nextId++;
      this.live.push(id);
      await this.db.query(
        'INSERT INTO items (id, grp, val, amount, big, ratio, flags) VALUES ($1, $2, $3, $4, $5, $6, $7)',
        [id, id % 7, `v${id} 'q' "dq" \\ ${'x'.repeat(id % 50)}`, (id * 1.125).toFixed(3), (9007199254740993n + BigInt(id)).toString(), id / 3, [true, id % 2 === 0, null]],
      );
      await this.db.query('INSERT INTO "Mixed Case" ("Key", "Value", note) VALUES ($1, $2, $3) ON CONFLICT ("Key") DO UPDATE SET "Value" = EXCLUDED."Value"', [
        `k${id % 500}`,
        JSON.stringify({ id, nested: { a: [1, 2, id] } }),
        id % 3 === 0 ? null : `n${id}`,
      ]);
      this.changes += 2;
    } else if (dice < 0.75) {
      await this.db.query("UPDATE items SET val = val || '+', amount = amount + 1, updated_at = now() WHERE id = $1", [this.pick()]);
      this.changes += 1;
    } else if (dice < 0.8) {
      // Several rows in one statement.
      const r = await this.db.query('UPDATE items SET ratio = ratio * 2 WHERE grp = $1 AND id > $2', [Math.floor(Math.random() * 7), this.nextId - 40]);
      this.changes += r.rowCount ?? 0;
    } else if (dice < 0.85) {
      // Primary-key change: delete of the old key plus insert of the new one at the target.
      const i = Math.floor(Math.random() * this.live.length);
      const old = this.live[i];
      const id = this.nextId++;
      await this.db.query('UPDATE items SET id = $1 WHERE id = $2', [id, old]);
      this.live[i] = id;
      this.changes += 1;
    } else {
      const i = Math.floor(Math.random() * this.live.length);
      const [id] = this.live.splice(i, 1);
      await this.db.query('DELETE FROM items WHERE id = $1', [id]);
      if (Math.random() < 0.3) await this.db.query('DELETE FROM "Mixed Case" WHERE "Key" = $1', [`k${(id ?? 0) % 500}`]);
      this.changes += 1;
    }
  }
}

/**
 * A writer on `url` running `step(client)` in a loop, `pauseMs` apart, until `stop()` (which
 * waits for the step under way and closes the connection).
 */
export async function writeUntilStopped(url: string, pauseMs: number, step: (writer: pg.Client) => Promise<void>): Promise<{ stop(): Promise<void> }> {
  const writer = new pg.Client({ connectionString: url });
  await writer.connect();
  let writing = true;
  const loop = (async () => {
    while (writing) {
      await step(writer);
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  })();
  return {
    stop: async () => {
      writing = false;
      await loop;
      await writer.end();
    },
  };
}
