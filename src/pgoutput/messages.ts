import type { Lsn } from '../core/lsn.js';

/** Decoded pgoutput messages (PostgreSQL docs, "Logical Replication Message Formats"). */

export interface RelationColumn {
  /** Part of the replica identity (the key). */
  isKey: boolean;
  name: string;
  typeOid: number;
  typeMod: number;
}

/** 'd' default (primary key), 'n' nothing, 'f' full, 'i' index. */
export type ReplicaIdentity = 'd' | 'n' | 'f' | 'i';

export interface RelationMessage {
  tag: 'relation';
  xid: number | undefined;
  relationId: number;
  schema: string;
  name: string;
  replicaIdentity: ReplicaIdentity;
  columns: RelationColumn[];
}

/**
 * One column of a tuple: a string (text format), a Buffer (binary format), null, or
 * `undefined` for an unchanged TOASTed value the server did not send.
 */
export type TupleValue = string | Buffer | null | undefined;

export interface BeginMessage { tag: 'begin'; finalLsn: Lsn; commitTime: bigint; xid: number }
export interface CommitMessage { tag: 'commit'; flags: number; commitLsn: Lsn; endLsn: Lsn; commitTime: bigint }
export interface OriginMessage { tag: 'origin'; originLsn: Lsn; name: string }
export interface TypeMessage { tag: 'type'; xid: number | undefined; typeOid: number; schema: string; name: string }
export interface InsertMessage { tag: 'insert'; xid: number | undefined; relationId: number; newTuple: TupleValue[] }
export interface UpdateMessage {
  tag: 'update';
  xid: number | undefined;
  relationId: number;
  /** 'K': only the old key was sent (key changed); 'O': the whole old row (REPLICA IDENTITY FULL). */
  oldKind: 'K' | 'O' | undefined;
  oldTuple: TupleValue[] | undefined;
  newTuple: TupleValue[];
}
export interface DeleteMessage {
  tag: 'delete';
  xid: number | undefined;
  relationId: number;
  oldKind: 'K' | 'O';
  oldTuple: TupleValue[];
}
export interface TruncateMessage {
  tag: 'truncate';
  xid: number | undefined;
  cascade: boolean;
  restartIdentity: boolean;
  relationIds: number[];
}
export interface LogicalMessage {
  tag: 'message';
  xid: number | undefined;
  transactional: boolean;
  lsn: Lsn;
  prefix: string;
  content: Buffer;
}
export interface StreamStartMessage { tag: 'stream_start'; xid: number; firstSegment: boolean }
export interface StreamStopMessage { tag: 'stream_stop' }
export interface StreamCommitMessage { tag: 'stream_commit'; xid: number; flags: number; commitLsn: Lsn; endLsn: Lsn; commitTime: bigint }
export interface StreamAbortMessage { tag: 'stream_abort'; xid: number; subXid: number }
/** Two-phase messages (protocol v3); syncline does not enable two-phase, so these are passed through. */
export interface TwoPhaseMessage { tag: 'two_phase'; kind: string; body: Buffer }

export type PgoutputMessage =
  | BeginMessage
  | CommitMessage
  | OriginMessage
  | RelationMessage
  | TypeMessage
  | InsertMessage
  | UpdateMessage
  | DeleteMessage
  | TruncateMessage
  | LogicalMessage
  | StreamStartMessage
  | StreamStopMessage
  | StreamCommitMessage
  | StreamAbortMessage
  | TwoPhaseMessage;
