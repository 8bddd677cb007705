import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { quoteIdent, quoteLiteral } from '../../src/core/sql.js';
import { silentLogger } from '../../src/log/logger.js';
import { embeddedPg17, freshDatabase, machinePg15, waitFor, withClient, type PgServer, slotStreaming, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_types');

/**
 * "Types, exactly": one column of each built-in type family, written at the source while the
 * pipeline runs, must read back at the target with exactly the same text output (and, for
 * built-in types, the same binary send form). Values travel as PostgreSQL text output
 * strings, so this checks the whole chain: walsender output function → pgoutput → change
 * event JSON → stream → text[] bind parameter → cast to the target column's type.
 */

/** Every value as the server's raw text output: no node-pg type parsing on either side. */
const RAW: pg.CustomTypesConfig = {
  getTypeParser: (() => (value: string) => value) as unknown as pg.CustomTypesConfig['getTypeParser'],
};

/** Session settings that decide text output; both comparing sessions use the same ones. */
const COMPARE_SETTINGS: Record<string, string> = {
  TimeZone: 'UTC',
  DateStyle: 'ISO, MDY',
  IntervalStyle: 'postgres',
  // > 0: shortest-exact float output (PG 12+), so a changed bit changes the text.
  extra_float_digits: '3',
  bytea_output: 'hex',
};

/** Settings whose server defaults the pipeline's own connections inherit. */
const INHERITED = ['TimeZone', 'DateStyle', 'IntervalStyle', 'extra_float_digits', 'bytea_output', 'lc_monetary', 'xmloption', 'server_encoding', 'client_encoding'];

const S = '"Typ Schema"'; // user types live outside the target's search_path on purpose

function ddl(pg14: boolean): string {
  return `
    CREATE SCHEMA ${S};
    CREATE TYPE ${S}.mood AS ENUM ('sad', 'ok', 'happy', 'it''s "odd", {really} (x)');
    CREATE DOMAIN ${S}.pos_int AS integer CHECK (VALUE > 0);
    CREATE TYPE ${S}.pair AS (label text, n integer, m ${S}.mood, at timestamptz);
    CREATE TABLE all_types (
      id bigint PRIMARY KEY,
      c_int2 smallint, c_int4 integer, c_int8 bigint,
      c_numeric numeric, c_numeric_scaled numeric(20,6),
      c_float4 real, c_float8 double precision,
      c_bool boolean,
      c_text text, c_varchar varchar(12), c_char char(8), c_qchar "char", c_name name,
      c_bytea bytea, c_uuid uuid, c_json json, c_jsonb jsonb,
      c_date date, c_time time, c_timetz timetz, c_timestamp timestamp, c_timestamptz timestamptz,
      c_timestamptz3 timestamptz(3), c_interval interval,
      c_int_arr integer[], c_text_arr text[], c_bounded_arr integer[], c_ts_arr timestamptz[], c_float8_arr float8[],
      c_enum ${S}.mood, c_enum_arr ${S}.mood[], c_domain ${S}.pos_int,
      c_composite ${S}.pair, c_composite_arr ${S}.pair[],
      c_int4range int4range, c_tstzrange tstzrange, c_numrange numrange,
      ${pg14 ? 'c_int4multirange int4multirange,' : ''}
      c_inet inet, c_cidr cidr, c_macaddr macaddr, c_macaddr8 macaddr8,
      c_money money, c_bit bit(5), c_varbit varbit,
      c_xml xml, c_oid oid, c_tsvector tsvector, c_tsquery tsquery,
      c_point point, c_line line, c_lseg lseg, c_box box, c_circle circle, c_path path, c_polygon polygon,
      c_pg_lsn pg_lsn,
      c_big text);`;
}

const q = quoteLiteral;
const TRICKY_TEXT = `it's "quoted" \\ back\\slash \\N NULL\nnew line\ttab\r\u0001\u007f ünïcödé ✓ 𝄞 😀👨‍👩‍👧 {a,b} (x,y) ,;`;
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('hex');
/** Out-of-line TOASTed (> 2 kB after compression), so a later UPDATE leaves it unchanged. */
const BIG = `(SELECT string_agg(md5(g::text), ' ') FROM generate_series(1, 800) g)`;

/** Rows as column → SQL expression; columns left out are NULL. */
function rows(pg14: boolean): Row[] {
  return [
    {
      id: '9223372036854775807',
      c_int2: '32767', c_int4: '2147483647', c_int8: '9223372036854775807',
      c_numeric: "'12345678901234567890.123456789012345678'", c_numeric_scaled: "'-12345678901234.5'",
      c_float4: "'3.4028235e38'", c_float8: "'1.7976931348623157e308'",
      c_bool: 'true',
      c_text: q(TRICKY_TEXT), c_varchar: q('héllo wörld!'), c_char: q('ab  '), c_qchar: `'a'`, c_name: q('a "name" 😀'),
      c_bytea: `decode('${ALL_BYTES}', 'hex')`, c_uuid: "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
      c_json: q('{"b": 1,\n   "a" :[1, 2 ,3.50e0]  , "b": "dup", "nul": "\\u0000", "u": "\\u00e9 😀"}'),
      c_jsonb: q('{"z": [1, 2.50, 1e3, "x\\"y"], "a": {"n": null}, "u": "\\u00e9 😀", "a": 2}'),
      c_date: "'5874897-12-31'", c_time: "'23:59:59.999999'", c_timetz: "'13:45:01.123456-09:30'",
      c_timestamp: "'294276-12-31 23:59:59.999999'", c_timestamptz: "'2024-02-29 23:59:59.999999+05:45'",
      c_timestamptz3: "'2024-02-29 23:59:59.9994+00'", c_interval: "'1 year 2 mons -3 days 04:05:06.789012'",
      c_int_arr: "'{{1,NULL,3},{NULL,5,-6}}'",
      c_text_arr: `ARRAY[${['a"b', 'c,d', 'NULL', '', ' sp ', 'back\\slash', '{braces}', 'new\nline'].map(q).join(', ')}, NULL]`,
      c_bounded_arr: "'[2:3]={1,2}'", c_ts_arr: `'{"2024-01-01 00:00:00.000001+00",infinity,-infinity,NULL}'`,
      c_float8_arr: "'{NaN,-0,1e-320,Infinity,-Infinity,0.1,0.30000000000000004}'",
      c_enum: q(`it's "odd", {really} (x)`), c_enum_arr: `ARRAY['sad', ${q(`it's "odd", {really} (x)`)}, NULL]::${S}.mood[]`,
      c_domain: '2147483647',
      c_composite: `ROW(${q('la"bel, (x) \\ y')}, 42, 'happy', '2024-01-01 12:00:00.5+02')::${S}.pair`,
      c_composite_arr: `ARRAY[ROW('a,b', 1, ${q(`it's "odd", {really} (x)`)}, NULL)::${S}.pair, ROW(NULL, NULL, NULL, NULL)::${S}.pair, NULL]`,
      c_int4range: "'[1,10)'", c_tstzrange: "'[2024-01-01 00:00:00.000001+00,)'", c_numrange: "'(-1.5,NaN]'",
      ...(pg14 ? { c_int4multirange: "'{[1,3), [5,7), [10,)}'" } : {}),
      c_inet: "'2001:db8::1/64'", c_cidr: "'10.0.0.0/8'", c_macaddr: "'08:00:2b:01:02:03'", c_macaddr8: "'08:00:2b:01:02:03:04:05'",
      c_money: "'92233720368547758.07'", c_bit: "B'10101'", c_varbit: `B'${'10'.repeat(70)}1'`,
      c_xml: q('<a x="1" y=\'2\'>  t&amp;&lt;<b/>\n <![CDATA[<c>]]></a>'), c_oid: '4294967295',
      c_tsvector: q("a fat:1A cat:2B,3 'it''s' sat"), c_tsquery: q("fat & (rat | !cat:*) <-> 'x y'"),
      c_point: "'(1.5,-2.25)'", c_line: "'{1,-1,0}'", c_lseg: "'[(0,0),(1,1)]'", c_box: "'(1,1),(0,0)'",
      c_circle: "'<(0,0),1.5>'", c_path: "'[(0,0),(1,1),(2,0)]'", c_polygon: "'((0,0),(1,1),(1,0))'",
      c_pg_lsn: "'FFFFFFFF/FFFFFFFF'",
      c_big: BIG,
    },
    {
      id: '-9223372036854775808',
      c_int2: '-32768', c_int4: '-2147483648', c_int8: '-9223372036854775808',
      c_numeric: pg14 ? "'-Infinity'" : "'-0.000000000000000000000000000001234'", c_numeric_scaled: "'0.000001'",
      c_float4: "'1e-45'", c_float8: "'5e-324'",
      c_bool: 'false',
      c_text: "''", c_varchar: "''", c_char: "''", c_qchar: `'\\351'`, c_name: "''",
      c_bytea: "''", c_uuid: "'00000000-0000-0000-0000-000000000000'", c_json: "'[]'", c_jsonb: "'{}'",
      c_date: "'4713-01-01 BC'", c_time: "'00:00:00'", c_timetz: "'00:00:00+14:00'",
      c_timestamp: "'4713-01-01 00:00:00 BC'", c_timestamptz: "'-infinity'", c_timestamptz3: "'1900-01-01 00:00:00+00'",
      c_interval: "'-2 years -3 mons +4 days -05:06:07.000008'",
      c_int_arr: "'{}'", c_text_arr: "'{}'", c_bounded_arr: "'[-5:-4][0:1]={{1,2},{3,4}}'", c_ts_arr: "'{}'", c_float8_arr: "'{}'",
      c_enum: "'sad'", c_enum_arr: `'{}'`, c_domain: '1',
      c_composite: `ROW('', 0, 'ok', 'infinity')::${S}.pair`, c_composite_arr: `'{}'`,
      c_int4range: "'empty'", c_tstzrange: "'(,)'", c_numrange: "'empty'",
      ...(pg14 ? { c_int4multirange: "'{}'" } : {}),
      c_inet: "'192.168.1.5'", c_cidr: "'::/0'", c_macaddr: "'00:00:00:00:00:00'", c_macaddr8: "'ff:ff:ff:ff:ff:ff:ff:ff'",
      c_money: "'-92233720368547758.08'", c_bit: "B'00000'", c_varbit: "B''",
      c_xml: q('plain &amp; text <b>bold</b><!--c--><?pi x?>'), c_oid: '0',
      c_tsvector: "''", c_tsquery: "'!x'",
      c_point: "'(-0,1e-300)'", c_line: "'{0,-1,5}'", c_lseg: "'[(-0,0),(0,-0)]'", c_box: "'(0,0),(0,0)'",
      c_circle: "'<(1e-300,-1e300),0>'", c_path: "'((0,0),(1e300,1))'", c_polygon: "'((0,0))'",
      c_pg_lsn: "'0/0'",
    },
    {
      id: '3',
      c_int2: '0', c_int4: '0', c_int8: '0',
      c_numeric: "'NaN'", c_numeric_scaled: "'0'",
      c_float4: "'NaN'", c_float8: "'-0'",
      c_bool: 'true',
      c_text: q('NULL'), c_varchar: q('\\N'), c_char: q('\\N'), c_qchar: `''`, c_name: q('NULL'),
      c_bytea: "'\\x00'", c_uuid: "'ffffffff-ffff-ffff-ffff-ffffffffffff'", c_json: q(' "just a string" '), c_jsonb: "'null'",
      c_date: "'infinity'", c_time: "'24:00:00'", c_timetz: "'24:00:00-15:59'",
      c_timestamp: "'infinity'", c_timestamptz: "'infinity'", c_timestamptz3: "'-infinity'",
      c_interval: "'-1 days -00:00:00.000001'",
      c_int_arr: "'{{{1}},{{NULL}}}'", c_text_arr: `ARRAY[NULL, 'NULL', '"NULL"']`, c_bounded_arr: "'[0:0]={7}'",
      c_ts_arr: "'{NULL}'", c_float8_arr: "'{{1.5,NaN},{-0,5e-324}}'",
      c_enum: "'happy'", c_enum_arr: `'{happy,ok}'`, c_domain: '7',
      c_composite: `'(,,,)'`, c_composite_arr: `ARRAY[NULL]::${S}.pair[]`,
      c_int4range: "'(,5]'", c_tstzrange: "'(-infinity,infinity)'", c_numrange: "'[1.000,1.0000]'",
      ...(pg14 ? { c_int4multirange: "'{(,0], [2,2]}'" } : {}),
      c_inet: "'::ffff:1.2.3.4/128'", c_cidr: "'2001:db8::/32'", c_macaddr: "'ff:ff:ff:ff:ff:ff'", c_macaddr8: "'08:00:2b:ff:fe:01:02:03'",
      c_money: "'0'", c_bit: "B'11111'", c_varbit: "B'0'",
      c_xml: "''", c_oid: '16384',
      c_tsvector: q("'\\\\back' 'quo''te' 'sp ace':1,2,3"), c_tsquery: q("'sp ace' & !'quo''te':*AB"),
      c_point: "'(NaN,Infinity)'", c_line: "'{1e-300,1,-1e300}'", c_lseg: "'[(1,2),(3,4)]'", c_box: "'(-Infinity,-1),(1,Infinity)'",
      c_circle: "'<(0.1,0.2),0.30000000000000004>'", c_path: "'[(0.1,0.2)]'", c_polygon: "'((0.1,0.2),(0.3,0.4),(5e-324,-0))'",
      c_pg_lsn: "'0/1'",
    },
    {
      id: '4',
      c_int2: '-1', c_int4: '-1', c_int8: '-1',
      c_numeric: pg14 ? "'Infinity'" : "'1e-1000'", c_numeric_scaled: "'99999999999999.999999'",
      c_float4: "'-0'", c_float8: "'0.30000000000000004'",
      c_bool: 'false',
      c_text: q(' leading and trailing spaces \t\n'), c_varchar: q('tab\there'), c_char: q('12345678'), c_qchar: `'"'`, c_name: q('x'.repeat(63)),
      c_bytea: "'\\x5c0a22'", c_uuid: "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12'", c_json: q('{"a":1,"a":2}'), c_jsonb: q('[1, "2", [3.000, {"4": true}]]'),
      c_date: "'-infinity'", c_time: "'12:00:00.5'", c_timetz: "'12:00:00.000001+15:59'",
      c_timestamp: "'-infinity'", c_timestamptz: "'1850-06-15 12:00:00+00:53:28'", c_timestamptz3: "'2000-01-01 00:00:00.001+00'",
      c_interval: "'178000000 years'",
      c_int_arr: "'{1,2,3}'", c_text_arr: `ARRAY[${q('😀')}, ${q('\\')}, ${q('"')}, ${q("'")}]`, c_bounded_arr: "'[-2147483648:-2147483647]={1,2}'",
      c_ts_arr: "'{\"1999-12-31 23:59:59.999999+00\"}'", c_float8_arr: "'{0.1,1e308,-1e-308}'",
      c_enum: "'ok'", c_enum_arr: `ARRAY[NULL]::${S}.mood[]`, c_domain: '42',
      c_composite: `ROW(${q('😀\n"x"')}, -1, NULL, '-infinity')::${S}.pair`, c_composite_arr: `ARRAY[ROW('x', 2, 'sad', NULL)]::${S}.pair[]`,
      c_int4range: "'[-2147483648,2147483647)'", c_tstzrange: "'empty'", c_numrange: "'(,)'",
      ...(pg14 ? { c_int4multirange: "'{empty}'" } : {}),
      c_inet: "'10.1.2.3/8'", c_cidr: "'192.168.100.128/25'", c_macaddr: "'01:23:45:67:89:ab'", c_macaddr8: "'00:00:00:00:00:00:00:00'",
      c_money: "'-0.01'", c_bit: "B'00001'", c_varbit: "B'1010'",
      c_xml: q('<?xml version="1.0"?><doc>é😀</doc>'), c_oid: '1',
      c_tsvector: q('x:1,2,3,4,5 y:16383D'), c_tsquery: q('a <3> b'),
      c_point: "'(1e300,-1e-300)'", c_line: "'{-0.1,0,3}'", c_lseg: "'[(1e300,1e300),(0,0)]'", c_box: "'(0.1,0.2),(0.1,0.2)'",
      c_circle: "'<(1,2),3>'", c_path: "'((0,0),(1,0),(1,1),(0,1))'", c_polygon: "'((0,0),(0.5,1e10),(1,0))'",
      c_pg_lsn: "'16/B374D848'",
      c_big: BIG,
    },
    { id: '5' }, // NULL in every column
    { id: '6', c_int4: '6', c_text: "'to be updated'", c_float8: "'1'", c_interval: "'1 second'", c_enum: "'ok'" },
    { id: '7', c_int4: '7', c_text: "'to be deleted'", c_composite: `ROW('bye', 7, 'sad', now())::${S}.pair` },
  ];
}

function insertSql(row: Row): string {
  const cols = Object.keys(row);
  return `INSERT INTO all_types (${cols.map(quoteIdent).join(', ')}) VALUES (${cols.map((c) => row[c]).join(', ')})`;
}

interface Snapshot {
  /** One line per row: the record's text output, which is COPY's text form up to COPY's own escaping. */
  rowsText: string | null;
  /** Every column's text output per row. */
  values: (string | null)[][];
  /** The binary send form of every built-in-typed column per row (hex). */
  binary: (string | null)[][];
}

/** Writes the rows, then updates and a delete, in several transactions. */
async function writeChanges(source: pg.Client, pg14: boolean): Promise<void> {
  const [a, b, c, d, e, f, g] = rows(pg14) as [Row, Row, Row, Row, Row, Row, Row];
  await source.query(`BEGIN; ${insertSql(a)}; ${insertSql(b)}; COMMIT`);
  await source.query(`${insertSql(c)}; ${insertSql(d)}`);
  await source.query(insertSql(e));
  await source.query(`BEGIN; ${insertSql(f)}; ${insertSql(g)}; ${insertSql({ ...d, id: '8' })}; ${insertSql({ id: '9' })}; COMMIT`);
  // A full-row rewrite (row 6 takes row 1's values), a row becoming all NULL, an all-NULL
  // row getting values, and updates that leave the TOASTed c_big unchanged (the server does
  // not send it; the sink must keep the stored value).
  const cols = Object.keys(a).filter((k) => k !== 'id').map(quoteIdent).join(', ');
  await source.query(`UPDATE all_types SET (${cols}) = (SELECT ${cols} FROM all_types WHERE id = ${a.id}) WHERE id = 6`);
  await source.query(`UPDATE all_types SET (${cols}) = ROW(${cols.split(', ').map(() => 'NULL').join(', ')}) WHERE id = 8`);
  await source.query(`UPDATE all_types SET c_text = 'no longer null', c_float8 = 'NaN', c_int_arr = '{NULL}', c_composite = '(,,,)' WHERE id = 9`);
  await source.query(`BEGIN; UPDATE all_types SET c_int2 = c_int2 - 1 WHERE id IN (4, ${a.id}); UPDATE all_types SET c_float4 = '0.1' WHERE id = 4; COMMIT`);
  await source.query('DELETE FROM all_types WHERE id = 7');
}

type Row = Record<string, string>;

interface Columns {
  /** The source table's columns (the target has syncline's version columns in addition). */
  names: string[];
  /** Send function per built-in-typed column (user types' send forms embed per-database OIDs). */
  sendFns: Map<string, string>;
}

async function sourceColumns(source: pg.Client): Promise<Columns> {
  const { rows: cols } = await source.query<{ name: string; send: string; builtin: string }>(
    `SELECT a.attname AS name, t.typsend::text AS send, (a.atttypid < 16384)::text AS builtin
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
      WHERE a.attrelid = 'all_types'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
  );
  return { names: cols.map((c) => c.name), sendFns: new Map(cols.filter((c) => c.builtin === 'true').map((c) => [c.name, c.send])) };
}

async function snapshot(c: pg.Client, columns: Columns): Promise<Snapshot> {
  const list = columns.names.map(quoteIdent).join(', ');
  // COPY (SELECT ...) TO STDOUT would need pg-copy-streams (not a dependency). Each row's
  // record text output plus every column's own text output carry the same information as
  // COPY's text form: all are the types' output functions; only the outer escaping differs.
  const agg = await c.query<{ s: string | null }>(`SELECT string_agg(t::text, E'\\n' ORDER BY t.id) AS s FROM (SELECT ${list} FROM all_types) t`);
  const values = await c.query<(string | null)[]>({ text: `SELECT ${list} FROM all_types ORDER BY id`, rowMode: 'array' });
  const sends = [...columns.sendFns].map(([col, fn]) => `encode(pg_catalog.${fn}(${quoteIdent(col)}), 'hex')`);
  const binary = await c.query<(string | null)[]>({ text: `SELECT ${sends.join(', ')} FROM all_types ORDER BY id`, rowMode: 'array' });
  return { rowsText: agg.rows[0]?.s ?? null, values: values.rows, binary: binary.rows };
}

/** Every value that differs, as `kind column id=…: source …, target …`. */
function differences(columns: Columns, want: Snapshot, have: Snapshot): string[] {
  const diffs: string[] = [];
  const haveIndex = new Map(have.values.map((r, i) => [r[0], i]));
  const sendNames = [...columns.sendFns.keys()];
  want.values.forEach((w, i) => {
    const id = w[0];
    const j = haveIndex.get(id);
    if (j === undefined) {
      diffs.push(`id=${id}: missing at the target`);
      return;
    }
    const cmp = (kind: string, names: string[], a: (string | null)[] | undefined, b: (string | null)[] | undefined): void => {
      names.forEach((n, k) => {
        if (a?.[k] !== b?.[k]) diffs.push(`${kind} ${n} id=${id}: source ${JSON.stringify(a?.[k])}, target ${JSON.stringify(b?.[k])}`);
      });
    };
    cmp('text', columns.names, w, have.values[j]);
    cmp('binary', sendNames, want.binary[i], have.binary[j]);
  });
  if (have.values.length !== want.values.length) diffs.push(`row count: source ${want.values.length}, target ${have.values.length}`);
  return diffs;
}

/**
 * Per-database defaults that change text output and input parsing. The walsender and the
 * sink's pooled connections inherit them; capture must not let them leak into the change
 * event (SQL/DMY dates with zone abbreviations, sql_standard intervals, rounded floats).
 */
const HOSTILE_DEFAULTS: Record<'source' | 'target', Record<string, string>> = {
  source: { DateStyle: 'SQL, DMY', IntervalStyle: 'sql_standard', extra_float_digits: '0', TimeZone: 'America/St_Johns', bytea_output: 'escape' },
  target: { DateStyle: 'SQL, MDY', IntervalStyle: 'sql_standard', extra_float_digits: '0', TimeZone: 'Asia/Kolkata', xmloption: 'document' },
};

async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url, types: RAW });
  await c.connect();
  for (const [k, v] of Object.entries(COMPARE_SETTINGS)) await c.query('SELECT set_config($1, $2, false)', [k, v]);
  return c;
}

function readSetting(url: string, name: string): Promise<string> {
  return withClient(url, async (c) => (await c.query<{ v: string }>('SELECT current_setting($1) AS v', [name])).rows[0]?.v ?? '');
}

for (const [label, startServer] of [
  ['PostgreSQL 15 (machine)', machinePg15],
  ['PostgreSQL 17 (embedded)', embeddedPg17],
] as const) {
  describe(`every built-in type round-trips exactly on ${label}`, () => {
    let server: PgServer;
    let dir: string;

    beforeAll(async () => {
      server = await startServer();
      dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-types-'));
    }, 120_000);

    afterAll(async () => {
      await server?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    // copy_threshold 1: every upsert goes through COPY into a typed staging table (copy-stage.ts).
    for (const [hostile, copyThreshold] of [[false, 0], [true, 0], [true, 1]] as const) {
      const scenario = (hostile ? 'different DateStyle/IntervalStyle/extra_float_digits/TimeZone/xmloption defaults at source and target' : 'the server defaults') + (copyThreshold > 0 ? ', staged by COPY' : '');
      it(`inserts, updates and deletes of every type arrive byte for byte, with ${scenario}`, async () => {
        const sourceUrl = await freshDatabase(server, 'syncline_types_src');
        const targetUrl = await freshDatabase(server, 'syncline_types_dst');
        if (hostile) {
          await withClient(server.url('postgres'), async (admin) => {
            for (const [side, db] of [['source', uniqueName('syncline_types_src')], ['target', uniqueName('syncline_types_dst')]] as const) {
              for (const [k, v] of Object.entries(HOSTILE_DEFAULTS[side])) await admin.query(`ALTER DATABASE ${quoteIdent(db)} SET ${quoteIdent(k)} = ${quoteLiteral(v)}`);
            }
          });
          expect(await readSetting(sourceUrl, 'DateStyle')).toBe('SQL, DMY');
        } else {
          // The pipeline's connections take the databases' defaults, which here must be the
          // same on both sides (on one machine they are; otherwise this case would be moot).
          for (const name of INHERITED) expect(await readSetting(targetUrl, name), name).toBe(await readSetting(sourceUrl, name));
        }
        const source = await connect(sourceUrl);
        const target = await connect(targetUrl);
        const ctl = new AbortController();
        let failure: unknown;
        let done: Promise<void> = Promise.resolve();
        const alive = (): void => {
          if (failure !== undefined) throw new Error(`pipeline failed: ${(failure as Error).message ?? String(failure)}`);
        };
        try {
          const version = await source.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`);
          const pg14 = Number(version.rows[0]?.v) >= 140000;
          await source.query(ddl(pg14));
          await target.query(ddl(pg14));
          const config = parseConfig(
            `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_types_pub, tables: [all_types] }]
stream: { broker: embedded, path: ${path.join(dir, `stream-${String(hostile)}-${copyThreshold}`)}, partitions: 3 }
consumer: { group_id: types, retry: { max_attempts: 2, backoff_base_ms: 20, backoff_max_ms: 100 } }
sink: { url: ${targetUrl}, copy_threshold: ${copyThreshold} }
dead_letter: { enabled: false }
monitoring: { enabled: false }
`,
            {},
          );
          done = runPipeline(config, 'run', silentLogger(), ctl.signal).catch((err: unknown) => {
            failure = err;
          });
          await waitFor('slot active', async () => {
            alive();
            return (await slotStreaming(source, SLOT));
          });

          await writeChanges(source, pg14);
          const columns = await sourceColumns(source);
          const expected = await snapshot(source, columns);

          // The source holds what the test means to send (guards against a vacuous pass).
          const byId = new Map(expected.values.map((r) => [r[0], r]));
          const col = (id: string, name: string): string | null | undefined => byId.get(id)?.[columns.names.indexOf(name)];
          expect([...byId.keys()]).toEqual(['-9223372036854775808', '3', '4', '5', '6', '8', '9', '9223372036854775807']);
          expect(col('-9223372036854775808', 'c_float8')).toBe('5e-324');
          expect(col('3', 'c_float8')).toBe('-0');
          expect(col('4', 'c_float8')).toBe('0.30000000000000004');
          expect(col('9223372036854775807', 'c_bytea')).toBe(`\\x${ALL_BYTES}`);
          expect(col('9223372036854775807', 'c_char')).toBe('ab      ');
          expect(col('9223372036854775807', 'c_text')).toBe(TRICKY_TEXT);
          expect(col('9223372036854775807', 'c_bounded_arr')).toBe('[2:3]={1,2}');
          expect(col('4', 'c_big')?.length).toBeGreaterThan(20_000);
          expect(byId.get('5')?.slice(1).every((v) => v === null)).toBe(true);
          expect(byId.get('8')?.slice(1).every((v) => v === null)).toBe(true);

          await waitFor('target equals source', async () => {
            alive();
            return (await snapshot(target, columns)).rowsText === expected.rowsText;
          }, 30_000, 200).catch(() => undefined); // the comparison below says what differs
          alive();
          const got = await snapshot(target, columns);
          expect(differences(columns, expected, got)).toEqual([]);
          expect(got.rowsText).toBe(expected.rowsText);
        } finally {
          ctl.abort();
          await done;
          await source.end();
          await target.end();
          // Release the slot so the next case can drop and recreate the database.
          await withClient(server.url('postgres'), async (admin) => {
            await waitFor('slot released', async () => (await admin.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active', [SLOT])).rowCount === 0, 10_000);
            await admin.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [SLOT]);
          });
        }
      });
    }
  });
}
