import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { rowKeyOf, tableLabelOf, type ChangeEvent, type Row } from '../../core/change.js';
import { StructuralError } from '../../core/errors.js';
import { parseLsn } from '../../core/lsn.js';
import { collapseBatch } from '../collapse.js';
import type { ApplyOutcome, Sink } from '../sink.js';
import { classifyRedisError, closeRedis, openRedis } from '../../redis/redis-client.js';

export interface RedisSinkOptions {
  /** `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). */
  url: string;
  /** First segment of every key syncline writes (`sink.state_schema`, default `syncline`). */
  prefix: string;
  /** hard: delete the hash (and keep a tombstone); soft: keep it with `_deleted_at` set. */
  deleteMode: 'hard' | 'soft';
  versionGate: boolean;
}

export const VERSION_LSN_FIELD = '_syncline_lsn';
export const VERSION_SEQ_FIELD = '_syncline_seq';
export const DELETED_AT_FIELD = '_deleted_at';

/** The JSON array of a change's key values: the row's identity inside its table. */
export function rowKeyJson(key: Row): string {
  return rowKeyOf({ key });
}

/** Key layout (see the README's "Redis sink"). Exported for tools and tests that read the target. */
export const redisKeys = {
  row: (prefix: string, schema: string, table: string, key: Row): string => `${prefix}:${schema}.${table}:${rowKeyJson(key)}`,
  tombstone: (prefix: string, schema: string, table: string, key: Row): string => `${prefix}:tomb:${schema}.${table}:${rowKeyJson(key)}`,
  truncation: (prefix: string, schema: string, table: string): string => `${prefix}:trunc:${schema}.${table}`,
  tableRows: (prefix: string, schema: string, table: string): string => `${prefix}:rows:${schema}.${table}`,
  positions: (prefix: string, group: string): string => `${prefix}:positions:${group}`,
};

/**
 * The whole batch in one script, so Redis runs it atomically: no other client sees half a
 * batch, and the positions are written with the rows.
 *
 * Redis does not roll a script back when a command inside it fails, so the script first
 * checks every key it will write (type only: reads), then writes. The foreseeable failure
 * (a foreign key of another type where a row, tombstone or bookkeeping key belongs) thus
 * aborts before the first write; an out-of-memory refusal comes at the first write, and once
 * a script has written Redis lets it finish.
 *
 * Versions are (commit LSN as 16 hex digits, seq). Lua's `<` on strings follows the server's
 * LC_COLLATE, so the LSN is compared as two 32-bit numbers: the same order as comparing the
 * fixed-width hex strings byte by byte, whatever the server's locale. Tombstones and
 * truncation watermarks hold `<lsn16>:<seq>`.
 *
 * KEYS[1]: the group's positions hash.
 * ARGV: gate ('1'|'0'), soft ('1'|'0'), P, P x (partition, offset), T, then per table:
 *   rowPrefix, tombPrefix, rowsKey, truncKey, truncLsn ('' = no truncation), truncSeq, N,
 *   then per row: op, keyJson, lsn16, seq, and
 *     op 'U' (whole row, replaces the hash) or 'P' (some columns unchanged: only the sent
 *     ones are written; 'Q' the same, stale when the row is absent, see superseded_at_source): S, S x (field, value), D, D x field (NULL columns: absent fields);
 *     op 'D' (delete): commit_ts.
 * Returns applied, stale per table, in ARGV order.
 */
const SCRIPT = `
local gate = ARGV[1] == '1'
local soft = ARGV[2] == '1'

local function num(hex) return tonumber(hex, 16) or 0 end
-- (al, as) < (bl, bs); an unparsable version counts as the oldest.
local function older(al, as, bl, bs)
  local ah, bh = num(string.sub(al, 1, 8)), num(string.sub(bl, 1, 8))
  if ah ~= bh then return ah < bh end
  local alo, blo = num(string.sub(al, 9, 16)), num(string.sub(bl, 9, 16))
  if alo ~= blo then return alo < blo end
  return as < bs
end
-- A tombstone or watermark at or after (lsn, seq).
local function covers(mark, lsn, seq)
  if not mark then return false end
  return not older(string.sub(mark, 1, 16), tonumber(string.sub(mark, 18)) or 0, lsn, seq)
end
-- The row exists with a version at or after (lsn, seq); rows without one count as oldest.
local function row_covers(key, lsn, seq)
  local v = redis.call('HMGET', key, '${VERSION_LSN_FIELD}', '${VERSION_SEQ_FIELD}')
  if not v[1] then return false end
  return not older(v[1], tonumber(v[2]) or 0, lsn, seq)
end
local function expect_type(key, want, kind)
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= want then
    return redis.error_reply(kind .. ' key ' .. key .. ' holds a ' .. t .. ', expected a ' .. want)
  end
end

-- Pass 1: parse, and check the type of every key this batch writes (reads only).
local err = expect_type(KEYS[1], 'hash', 'SYNCLINE_STATE')
if err then return err end
local i = 3
local npos = tonumber(ARGV[i]); i = i + 1
local posargs = {}
for _ = 1, npos do
  posargs[#posargs + 1] = ARGV[i]; posargs[#posargs + 1] = ARGV[i + 1]; i = i + 2
end
local tables = {}
local ntables = tonumber(ARGV[i]); i = i + 1
for _ = 1, ntables do
  local t = { row_prefix = ARGV[i], tomb_prefix = ARGV[i + 1], rows_key = ARGV[i + 2], trunc_key = ARGV[i + 3],
              trunc_lsn = ARGV[i + 4], trunc_seq = tonumber(ARGV[i + 5]), trunc_seq_text = ARGV[i + 5], rows = {} }
  local nrows = tonumber(ARGV[i + 6]); i = i + 7
  err = expect_type(t.rows_key, 'set', 'SYNCLINE_STATE') or expect_type(t.trunc_key, 'string', 'SYNCLINE_STATE')
  if err then return err end
  for _ = 1, nrows do
    -- seq: a number to compare, its text to store.
    local r = { op = ARGV[i], id = ARGV[i + 1], lsn = ARGV[i + 2], seq = tonumber(ARGV[i + 3]), seq_text = ARGV[i + 3] }
    i = i + 4
    r.key = t.row_prefix .. r.id
    r.tomb = t.tomb_prefix .. r.id
    if r.op == 'D' then
      r.ts = ARGV[i]; i = i + 1
    else
      local nset = tonumber(ARGV[i]); i = i + 1
      r.set = {}
      for j = 0, 2 * nset - 1 do r.set[#r.set + 1] = ARGV[i + j] end
      i = i + 2 * nset
      local ndel = tonumber(ARGV[i]); i = i + 1
      r.del = {}
      for j = 0, ndel - 1 do r.del[#r.del + 1] = ARGV[i + j] end
      i = i + ndel
    end
    err = expect_type(r.key, 'hash', 'SYNCLINE_ROW') or expect_type(r.tomb, 'string', 'SYNCLINE_ROW')
    if err then return err end
    -- Unchanged columns need the stored row; an absent one (not deleted or truncated by a
    -- newer change, which makes the change stale) would lose them: refuse, never guess.
    -- 'Q': capture found the row gone from this key at the source (superseded_at_source): a
    -- later change of the key decides the row, so an absent row makes it stale instead.
    if (r.op == 'P' or r.op == 'Q') and redis.call('EXISTS', r.key) == 0
       and not covers(redis.call('GET', t.trunc_key), r.lsn, r.seq)
       and not (t.trunc_lsn ~= '' and not older(t.trunc_lsn, t.trunc_seq, r.lsn, r.seq))
       and not covers(redis.call('GET', r.tomb), r.lsn, r.seq) then
      if r.op == 'P' then
        return redis.error_reply('UNCHANGED_VALUE_MISSING ' .. r.key .. ' is absent, and the change left some of its values unchanged (not sent): refused rather than stored without them')
      end
      r.skip = true
    end
    t.rows[#t.rows + 1] = r
  end
  tables[#tables + 1] = t
end

-- Pass 2: write.
local result = {}
for _, t in ipairs(tables) do
  local applied, stale = 0, 0
  local watermark = redis.call('GET', t.trunc_key)
  if t.trunc_lsn ~= '' then
    if gate and covers(watermark, t.trunc_lsn, t.trunc_seq) then
      stale = stale + 1
    else
      watermark = t.trunc_lsn .. ':' .. t.trunc_seq_text
      redis.call('SET', t.trunc_key, watermark)
      -- Rows older than the truncation go; newer ones (from other partitions) stay.
      local cursor = '0'
      repeat
        local page = redis.call('SSCAN', t.rows_key, cursor, 'COUNT', 1000)
        cursor = page[1]
        for _, id in ipairs(page[2]) do
          local key = t.row_prefix .. id
          if redis.call('TYPE', key).ok ~= 'hash' then
            redis.call('SREM', t.rows_key, id)
          elseif not (gate and row_covers(key, t.trunc_lsn, t.trunc_seq)) then
            redis.call('DEL', key)
            redis.call('SREM', t.rows_key, id)
          end
        end
      until cursor == '0'
      applied = applied + 1
    end
  end
  for _, r in ipairs(t.rows) do
    local skip = r.skip or (gate and (covers(watermark, r.lsn, r.seq) or covers(redis.call('GET', r.tomb), r.lsn, r.seq) or row_covers(r.key, r.lsn, r.seq)))
    if skip then
      stale = stale + 1
    elseif r.op == 'D' then
      if not soft then
        redis.call('DEL', r.key)
        redis.call('SREM', t.rows_key, r.id)
      elseif redis.call('EXISTS', r.key) == 1 then
        redis.call('HSET', r.key, '${DELETED_AT_FIELD}', r.ts, '${VERSION_LSN_FIELD}', r.lsn, '${VERSION_SEQ_FIELD}', r.seq_text)
      end
      redis.call('SET', r.tomb, r.lsn .. ':' .. r.seq_text)
      applied = applied + 1
    else
      if r.op == 'U' then
        redis.call('DEL', r.key)
      else
        if #r.del > 0 then redis.call('HDEL', r.key, unpack(r.del)) end
        if soft then redis.call('HDEL', r.key, '${DELETED_AT_FIELD}') end
      end
      r.set[#r.set + 1] = '${VERSION_LSN_FIELD}'; r.set[#r.set + 1] = r.lsn
      r.set[#r.set + 1] = '${VERSION_SEQ_FIELD}'; r.set[#r.set + 1] = r.seq_text
      redis.call('HSET', r.key, unpack(r.set))
      redis.call('SADD', t.rows_key, r.id)
      -- The row's own version now keeps older changes out; the tombstone is no longer needed.
      redis.call('DEL', r.tomb)
      applied = applied + 1
    end
  end
  result[#result + 1] = applied
  result[#result + 1] = stale
end
if npos > 0 then redis.call('HSET', KEYS[1], unpack(posargs)) end
return result
`;

const SCRIPT_SHA = createHash('sha1').update(SCRIPT).digest('hex');

/** A commit LSN as 16 upper-case hex digits: fixed width, so it also sorts as text. */
function lsn16(text: string): string {
  return parseLsn(text).toString(16).toUpperCase().padStart(16, '0');
}

/**
 * Redis target. Each row is a hash `<prefix>:<schema>.<table>:<key json>` holding the column
 * values (SQL NULL: no field) plus `_syncline_lsn` and `_syncline_seq`. Each batch is one
 * Lua script (EVALSHA, EVAL when the server lost the script): the version gate, tombstones,
 * truncation watermarks and the consumer positions, all atomic.
 *
 * TRUNCATE removes the table's rows through a per-table index set `<prefix>:rows:<schema>.<table>`
 * kept by the script, not with SCAN: a script blocks the server while it runs, and SCAN would
 * walk the whole keyspace (every table, every tombstone, the application's own keys) where
 * the index walks only that table's rows. It costs one SADD per written row and the key
 * JSON's memory.
 *
 * Standalone Redis (or Sentinel) only: the script touches keys of many hash slots, which
 * Redis Cluster cannot run in one script.
 */
export class RedisSink implements Sink {
  readonly storesPositions = true;
  private readonly client: Redis;

  constructor(private readonly options: RedisSinkOptions) {
    this.client = openRedis(options.url);
  }

  async prepare(): Promise<void> {
    try {
      // Loading the script checks the connection and saves the first batch its EVAL fallback.
      await this.client.script('LOAD', SCRIPT);
    } catch (err) {
      throw classifyRedisError(err, 'connecting to the Redis sink');
    }
  }

  async positions(group: string): Promise<Map<number, bigint>> {
    let stored: Record<string, string>;
    try {
      stored = await this.client.hgetall(redisKeys.positions(this.options.prefix, group));
    } catch (err) {
      throw classifyRedisError(err, 'reading positions from the Redis sink');
    }
    return new Map(Object.entries(stored).map(([p, o]) => [Number(p), BigInt(o)]));
  }

  async apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome> {
    const { tables, superseded } = collapseBatch(changes);
    const prefix = this.options.prefix;
    const args: string[] = [SCRIPT_SHA, '1', redisKeys.positions(prefix, group), this.options.versionGate ? '1' : '0', this.options.deleteMode === 'soft' ? '1' : '0'];
    args.push(String(positions.size));
    for (const [p, o] of positions) args.push(String(p), o.toString());
    args.push(String(tables.length));
    const labels: string[] = [];
    for (const t of tables) {
      const table = tableLabelOf(t);
      if (t.multiset.length > 0) {
        // A hash per row needs a key to name it; rows of a keyless table cannot be told apart.
        throw new StructuralError(
          table,
          `keyless table ${table} (REPLICA IDENTITY FULL without a primary key) cannot be kept in Redis, which stores one hash per key`,
          `give ${table} a primary key at the source, leave it out of the publication, or route it to a postgres, mysql or sqlite sink`,
        );
      }
      labels.push(table);
      const rows = t.rows.filter((r) => r.op === 'DELETE' || r.payload !== null);
      args.push(`${prefix}:${table}:`, `${prefix}:tomb:${table}:`, redisKeys.tableRows(prefix, t.schema, t.table), redisKeys.truncation(prefix, t.schema, t.table));
      args.push(t.truncate ? lsn16(t.truncate.commit_lsn) : '', String(t.truncate?.seq ?? 0), String(rows.length));
      for (const r of rows) {
        const id = rowKeyJson(r.key);
        if (r.op === 'DELETE' || r.payload === null) {
          args.push('D', id, lsn16(r.commit_lsn), String(r.seq), r.commit_ts);
          continue;
        }
        const partial = (r.unchanged?.length ?? 0) > 0;
        args.push(partial ? (r.superseded_at_source ? 'Q' : 'P') : 'U', id, lsn16(r.commit_lsn), String(r.seq));
        const nulls: string[] = [];
        const setAt = args.length;
        args.push('0');
        let nset = 0;
        for (const [col, value] of Object.entries(r.payload)) {
          if (value === null) nulls.push(col);
          else {
            args.push(col, value);
            nset++;
          }
        }
        args[setAt] = String(nset);
        // A replaced hash has no NULL fields to remove.
        if (partial) args.push(String(nulls.length), ...nulls);
        else args.push('0');
      }
    }
    const counts = await this.run(args);
    const outcome: ApplyOutcome = { applied: 0, stale: 0, superseded, byTable: new Map() };
    labels.forEach((table, i) => {
      const applied = Number(counts[2 * i] ?? 0);
      const stale = Number(counts[2 * i + 1] ?? 0);
      outcome.applied += applied;
      outcome.stale += stale;
      outcome.byTable.set(table, { applied, stale });
    });
    return outcome;
  }

  async close(): Promise<void> {
    await closeRedis(this.client);
  }

  /** EVALSHA; after a server restart or SCRIPT FLUSH (NOSCRIPT) the same call as EVAL. */
  private async run(args: string[]): Promise<unknown[]> {
    let reply: unknown;
    try {
      reply = await this.client.call('EVALSHA', args);
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith('NOSCRIPT'))) throw classifyRedisError(err, 'applying to the Redis sink');
      try {
        reply = await this.client.call('EVAL', [SCRIPT, ...args.slice(1)]);
      } catch (evalErr) {
        throw classifyRedisError(evalErr, 'applying to the Redis sink');
      }
    }
    return Array.isArray(reply) ? reply : [];
  }
}
