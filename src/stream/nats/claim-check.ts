/**
 * Records over the server's `max_payload` (1 MB by default, at most 64 MB, a server setting
 * the client cannot change) go through the topic's JetStream object store: a claim check.
 * The producer puts the record's value in the bucket `<NAME>_objects` (nats-names.ts) as an
 * object named after the record's identity, then publishes the record in its place in the
 * partition, in order with the others, with an empty body and these headers besides the
 * usual ones:
 *
 *   Syncline-Object: <object name>
 *   Syncline-Object-Bucket: <bucket>
 *   Syncline-Object-Size: <bytes of the value>
 *
 * The reader (partition-reader.ts) fetches the object and hands the whole value on: apply
 * sees no difference. The name is a digest of the record's `Nats-Msg-Id` (its commit LSN,
 * sequence and key), so capture publishing the record again after a restart (kill -9
 * between the put and the publish, or a refused publish) finds the same object (and writes
 * nothing when it holds the same bytes) or puts it again, replacing the one before (the object
 * store keeps one object per name and purges the old one's chunks), rather than adding a
 * second. A put cut short (kill -9 in the middle of it) leaves the chunks it wrote without an
 * object; they expire with the bucket. Objects expire with the topic: the bucket's
 * `max_age` is the partition streams' plus an hour, as an object is put before its record.
 *
 * nats.js's object store is used as is: it splits a value into 128 KiB chunks published
 * with acknowledgement, then a meta message (name, size, chunk count, SHA-256 digest) that
 * replaces the name's previous one; reading checks the digest.
 */
import { createHash, randomUUID } from 'node:crypto';
import { StorageType, nanos, type Msg, type NatsConnection, type ObjectStore } from 'nats';
import { PrerequisiteError, SynclineError } from '../../core/errors.js';
import { natsError } from './nats-errors.js';

export const OBJECT_HEADER = 'Syncline-Object';
export const OBJECT_BUCKET_HEADER = 'Syncline-Object-Bucket';
export const OBJECT_SIZE_HEADER = 'Syncline-Object-Size';

/** How much longer objects are kept than the records that name them. */
const OBJECT_EXTRA_AGE_MS = 3_600_000;

/** A record's claim on an object: what its headers name. */
export interface Claim {
  bucket: string;
  name: string;
  size: number;
}

/**
 * The object name of a record with `Nats-Msg-Id` `msgId` (natsMsgIdOf): a digest of it, so
 * the same record always names the same object. A record without one (no deduplication
 * either) gets a random name.
 */
export function objectNameOf(msgId: string | undefined): string {
  return msgId === undefined ? randomUUID() : createHash('sha256').update(msgId).digest('hex').slice(0, 40);
}

/** The header lines of a claim, each starting with CRLF, for recordHeaderBlock. */
export function claimHeaderLines(claim: Claim): string {
  return `\r\n${OBJECT_HEADER}: ${claim.name}\r\n${OBJECT_BUCKET_HEADER}: ${claim.bucket}\r\n${OBJECT_SIZE_HEADER}: ${claim.size}`;
}

/**
 * The claim of a delivered message with an empty body, if it has one. Read only for an
 * empty body (no change record is empty): nats.js decodes the headers here, which the
 * reader's path for other records never does.
 */
export function claimOf(msg: Msg): Claim | undefined {
  const h = msg.headers;
  if (h === undefined) return undefined;
  const name = h.get(OBJECT_HEADER);
  if (name === '') return undefined;
  return { name, bucket: h.get(OBJECT_BUCKET_HEADER), size: Number(h.get(OBJECT_SIZE_HEADER)) };
}

/** The topic's object store, opened (and created) at its first use. */
export class ObjectBucket {
  private store: Promise<ObjectStore> | null = null;

  constructor(
    private readonly nc: NatsConnection,
    readonly bucket: string,
    /** The partition streams' max_age. */
    private readonly retentionMs: number,
    /** How long a put or a get may take. */
    private readonly timeoutMs: number,
  ) {}

  private open(): Promise<ObjectStore> {
    if (this.store === null) {
      const opening = this.nc
        .jetstream({ timeout: this.timeoutMs })
        .views.os(this.bucket, { ttl: nanos(this.retentionMs + OBJECT_EXTRA_AGE_MS), storage: StorageType.File, replicas: 1 });
      // A failed open is tried again by the next call.
      opening.catch(() => {
        if (this.store === opening) this.store = null;
      });
      this.store = opening;
    }
    return this.store;
  }

  /**
   * Stores `value` as object `name`, replacing an object of that name, unless that object
   * holds these very bytes already (the same record published again after a restart): then
   * nothing is written.
   */
  async put(name: string, value: Buffer): Promise<void> {
    try {
      const os = await this.open();
      const had = await os.info(name);
      if (had === null || had.deleted || had.size !== value.length || !sameDigest(had.digest, value)) {
        await os.putBlob({ name }, value, { timeout: this.timeoutMs });
      }
    } catch (err) {
      const e = natsError(err, `putting a record of ${value.length} bytes in object store ${this.bucket}`);
      // nats.js times a chunk out with its own error; the put can be made again.
      throw e.code === 'NATS_UNKNOWN' ? new SynclineError('NATS_OBJECT_PUT_FAILED', e.message, { retriable: true, cause: err }) : e;
    }
  }

  /**
   * The value of a claim's object. A missing object (deleted, or expired before its record)
   * is a PrerequisiteError: its change is lost from the stream. Other failures are retriable.
   */
  async get(claim: Claim): Promise<Buffer> {
    if (claim.bucket !== this.bucket) {
      throw new PrerequisiteError(
        `NATS: a record names object ${claim.name} in bucket ${claim.bucket}, not in this topic's ${this.bucket}`,
        'the record was not published by syncline to this topic; remove it from the stream or read it with its own client',
      );
    }
    let os: ObjectStore;
    try {
      os = await this.open();
    } catch (err) {
      throw retriable(err, `opening object store ${this.bucket}`);
    }
    let result: Awaited<ReturnType<ObjectStore['get']>>;
    try {
      result = await os.get(claim.name);
    } catch (err) {
      throw retriable(err, `reading object ${claim.name} of ${this.bucket}`);
    }
    if (result === null) {
      throw new PrerequisiteError(
        `NATS: object ${claim.name} of bucket ${this.bucket}, the value (${claim.size} bytes) of a record over the server's max_payload, is missing: it was deleted, or expired before its record`,
        'the change is lost from the stream: re-sync the target with `syncline snapshot` (or `verify` + `repair`) and start apply past the record with `--from`',
      );
    }
    const reader = result.data.getReader();
    const timer = setTimeout(() => void reader.cancel().catch(() => undefined), this.timeoutMs);
    try {
      const parts: Uint8Array[] = [];
      let size = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        size += value.length;
      }
      const failed = await result.error;
      if (failed) throw failed;
      // A read cancelled by the timer ends early without an error.
      if (size !== claim.size) throw new Error(`read ${size} of its ${claim.size} bytes`);
      return Buffer.concat(parts, size);
    } catch (err) {
      throw retriable(err, `reading object ${claim.name} of ${this.bucket}`);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Whether `digest` (the object store's `SHA-256=<base64url>`) is the SHA-256 of `value`. */
function sameDigest(digest: string, value: Buffer): boolean {
  const prefix = 'SHA-256=';
  if (!digest.startsWith(prefix)) return false;
  return Buffer.from(digest.slice(prefix.length), 'base64url').equals(createHash('sha256').update(value).digest());
}

function retriable(err: unknown, doing: string): SynclineError {
  const e = natsError(err, doing);
  return e.retriable ? e : new SynclineError('NATS_OBJECT_READ_FAILED', e.message, { retriable: true, cause: err });
}
