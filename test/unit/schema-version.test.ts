import { describe, expect, it } from 'vitest';
import { columnSignature, RelationIds, SchemaVersionHistory, type ColumnType, type RelationSighting, type SchemaVersionEntry } from '../../src/core/schema-version.js';
import { ChangeBuilder, type VersionContext } from '../../src/pipeline/change-builder.js';
import type { ChangeEvent } from '../../src/core/change.js';
import type { RelationMessage } from '../../src/pgoutput/messages.js';

const v1: ColumnType[] = [
  { name: 'id', typeOid: 23, typeMod: -1 },
  { name: 'v', typeOid: 25, typeMod: -1 },
];
const v2: ColumnType[] = [...v1, { name: 'w', typeOid: 1043, typeMod: 44 }];

describe('_schema_version', () => {
  it('the signature covers names, types and modifiers', () => {
    expect(columnSignature(v1)).toBe(columnSignature(v1.map((c) => ({ ...c }))));
    expect(columnSignature(v1)).not.toBe(columnSignature([v1[0] as ColumnType, { name: 'v', typeOid: 1043, typeMod: -1 }]));
    expect(columnSignature(v2)).not.toBe(columnSignature([...v1, { name: 'w', typeOid: 1043, typeMod: 84 }]));
  });

  it('same definition after a restart: same version; a changed one: the next, also after a restart', () => {
    const recorded: SchemaVersionEntry[] = [];
    const first = new SchemaVersionHistory([], (e) => recorded.push(e));
    expect(first.versionOf('public', 't', v1, 100n)).toBe(1);
    expect(first.versionOf('public', 't', v1, 200n)).toBe(1);
    expect(first.versionOf('public', 'other', v2, 200n)).toBe(1);
    expect(recorded).toHaveLength(2);

    const second = new SchemaVersionHistory(recorded, (e) => recorded.push(e));
    expect(second.versionOf('public', 't', v1, 300n)).toBe(1);
    expect(second.versionOf('public', 't', v2, 400n)).toBe(2);
    const third = new SchemaVersionHistory(recorded, (e) => recorded.push(e));
    expect(third.versionOf('public', 't', v2, 500n)).toBe(2);
    // Back to the first definition (a column dropped again): versions only increase.
    expect(third.versionOf('public', 't', v1, 600n)).toBe(3);
    expect(recorded.map((e) => `${e.table}:${e.version}`)).toEqual(['t:1', 'other:1', 't:2', 't:3']);
  });

  it('WAL replayed from before a definition change keeps the versions it had', () => {
    const recorded: SchemaVersionEntry[] = [];
    const first = new SchemaVersionHistory([], (e) => recorded.push(e));
    first.versionOf('public', 't', v1, 100n);
    first.versionOf('public', 't', v2, 400n);
    // Killed before acknowledging 400: the slot resends from 300, still the old definition.
    const replay = new SchemaVersionHistory(recorded, (e) => recorded.push(e));
    expect(replay.versionOf('public', 't', v1, 300n)).toBe(1);
    expect(replay.versionOf('public', 't', v2, 400n)).toBe(2);
    expect(recorded).toHaveLength(2);
  });

  it('the change builder versions relations and snapshot rows from the registry', () => {
    const recorded: SchemaVersionEntry[] = [{ schema: 'public', table: 't', version: 7, signature: columnSignature(v1), lsn: 1n }];
    const b = new ChangeBuilder('src', new Set(['syncline']), new Map(), new SchemaVersionHistory(recorded, (e) => recorded.push(e)));
    const relation = (columns: ColumnType[], schema = 'public', name = 't'): RelationMessage => ({
      tag: 'relation', xid: undefined, relationId: name === 't' ? 1 : 2, schema, name, replicaIdentity: 'd', columns: columns.map((c, i) => ({ ...c, isKey: i === 0 })),
    });
    const out: ChangeEvent[] = [];
    b.handle({ tag: 'begin', finalLsn: 1000n, commitTime: 0n, xid: 1 }, 900n, out);
    b.handle(relation(v1), 901n, out);
    b.handle({ tag: 'insert', xid: undefined, relationId: 1, newTuple: ['1', 'a'] }, 902n, out);
    b.handle(relation(v2), 903n, out);
    b.handle({ tag: 'insert', xid: undefined, relationId: 1, newTuple: ['2', 'b', 'c'] }, 904n, out);
    // Snapshot rows read with the new definition share its version.
    out.push(b.snapshotRow(b.openTransaction as VersionContext, 'public', 't', ['id', 'v', 'w'], ['3', 'x', 'y'], ['id'], 905n, v2));
    b.handle(relation(v1, 'syncline', 'snapshots'), 906n, out);
    b.handle({ tag: 'commit', flags: 0, commitLsn: 1000n, endLsn: 1010n, commitTime: 0n }, 1010n, out);
    expect(out.map((e) => e._schema_version)).toEqual([7, 8, 8]);
    // syncline's own tables are not versioned.
    expect(recorded.map((e) => `${e.schema}.${e.table}:${e.version}`)).toEqual(['public.t:7', 'public.t:8']);
  });

  it('a Relation message sent at WAL position 0 (as the walsender sends them) dates its definition by its transaction, so replayed WAL keeps its version', () => {
    const recorded: SchemaVersionEntry[] = [];
    const relation = (columns: ColumnType[]): RelationMessage => ({
      tag: 'relation', xid: undefined, relationId: 1, schema: 'public', name: 't', replicaIdentity: 'd', columns: columns.map((c, i) => ({ ...c, isKey: i === 0 })),
    });
    const txn = (b: ChangeBuilder, commit: bigint, columns: ColumnType[], out: ChangeEvent[]): void => {
      b.handle({ tag: 'begin', finalLsn: commit, commitTime: 0n, xid: 1 }, commit - 10n, out);
      b.handle(relation(columns), 0n, out);
      b.handle({ tag: 'insert', xid: undefined, relationId: 1, newTuple: columns.map(() => '1') }, commit - 5n, out);
      b.handle({ tag: 'commit', flags: 0, commitLsn: commit, endLsn: commit + 1n, commitTime: 0n }, commit + 1n, out);
    };
    const first: ChangeEvent[] = [];
    const b1 = new ChangeBuilder('src', new Set(), new Map(), new SchemaVersionHistory([], (e) => recorded.push(e)));
    txn(b1, 1000n, v1, first);
    txn(b1, 2000n, v2, first);
    expect(recorded.map((e) => e.lsn)).toEqual([1000n, 2000n]);
    // After a restart the same WAL is replayed: each change keeps the version it had.
    const replayed: ChangeEvent[] = [];
    const b2 = new ChangeBuilder('src', new Set(), new Map(), new SchemaVersionHistory(recorded, (e) => recorded.push(e)));
    txn(b2, 1000n, v1, replayed);
    txn(b2, 2000n, v2, replayed);
    expect(replayed.map((e) => e._schema_version)).toEqual(first.map((e) => e._schema_version));
    expect(recorded).toHaveLength(2);
  });

  describe('relation ids: which relation a table name stands for', () => {
    it('a name seen first is recorded; the same relid again is nothing new', () => {
      const ids = new RelationIds();
      expect(ids.see('public', 't', 10, 100n)).toEqual({ kind: 'record' });
      expect(ids.see('public', 't', 10, 200n)).toEqual({ kind: 'same' });
    });

    it('a table dropped and created again under its name is a new relation', () => {
      const ids = new RelationIds([{ schema: 'public', table: 'rc', relid: 10, since: 100n }]);
      expect(ids.see('public', 'rc', 11, 300n)).toEqual({ kind: 'new' });
      expect(ids.see('public', 'rc', 11, 400n)).toEqual({ kind: 'same' });
    });

    it('renamed over a dropped table seen after it: its old name is where its changes went (red17b)', () => {
      // b seen first, then a; DROP TABLE a; ALTER TABLE b RENAME TO a.
      const ids = new RelationIds([{ schema: 'public', table: 'b', relid: 20, since: 100n }, { schema: 'public', table: 'a', relid: 21, since: 200n }]);
      expect(ids.see('public', 'a', 20, 300n)).toEqual({ kind: 'new', from: { schema: 'public', table: 'b' } });
      expect(ids.see('public', 'a', 20, 400n)).toEqual({ kind: 'same' });
      // r -> r2, a new r, then r2 renamed back over it.
      const back = new RelationIds([{ schema: 'public', table: 'r', relid: 10, since: 100n }]);
      expect(back.see('public', 'r2', 10, 200n)).toEqual({ kind: 'new', from: { schema: 'public', table: 'r' } });
      expect(back.see('public', 'r', 11, 300n)).toEqual({ kind: 'new' });
      expect(back.see('public', 'r', 10, 400n)).toEqual({ kind: 'new', from: { schema: 'public', table: 'r2' } });
    });

    it('renamed and renamed back: the name it had in between is where its changes went', () => {
      const ids = new RelationIds([{ schema: 'public', table: 'r', relid: 10, since: 100n }]);
      expect(ids.see('public', 'r2', 10, 200n)).toEqual({ kind: 'new', from: { schema: 'public', table: 'r' } });
      expect(ids.see('public', 'r', 10, 300n)).toEqual({ kind: 'new', from: { schema: 'public', table: 'r2' } });
      expect(ids.see('public', 'r', 10, 350n)).toEqual({ kind: 'same' });
      // And away again: r2's relation is the same, but it went through r since.
      expect(ids.see('public', 'r2', 10, 400n)).toEqual({ kind: 'new', from: { schema: 'public', table: 'r' } });
    });

    it('WAL replayed after a restart (the recorded sightings loaded again) finds nothing new', () => {
      const recorded: RelationSighting[] = [
        { schema: 'public', table: 'r', relid: 10, since: 300n },
        { schema: 'public', table: 'r2', relid: 10, since: 200n },
        { schema: 'public', table: 'rc', relid: 11, since: 300n },
      ];
      const ids = new RelationIds(recorded);
      // From before the rename back, in order: r (old relation), r2, then r and rc again.
      expect(ids.see('public', 'r', 10, 150n)).toEqual({ kind: 'same' });
      expect(ids.see('public', 'rc', 9, 150n)).toEqual({ kind: 'same' });
      expect(ids.see('public', 'r2', 10, 200n)).toEqual({ kind: 'same' });
      expect(ids.see('public', 'r2', 10, 250n)).toEqual({ kind: 'same' });
      expect(ids.see('public', 'r', 10, 300n)).toEqual({ kind: 'same' });
      expect(ids.see('public', 'rc', 11, 300n)).toEqual({ kind: 'same' });
    });

    it('a name recorded before relids were (none loaded) takes the relid it is seen with, unless it came from another name', () => {
      const ids = new RelationIds([{ schema: 'public', table: 'moved', relid: 12, since: 100n }]);
      expect(ids.see('public', 'legacy', 10, 200n)).toEqual({ kind: 'record' });
      expect(ids.see('public', 'back', 12, 300n)).toEqual({ kind: 'new', from: { schema: 'public', table: 'moved' } });
    });
  });
});
