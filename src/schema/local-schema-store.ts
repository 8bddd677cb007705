/**
 * Schemas kept in a file next to the embedded stream's log (`<stream.path>/schemas.jsonl`),
 * for `format: avro | json_schema | protobuf` on one machine without a registry. One JSON
 * line per schema, `{"id","subject","schemaType","schema"}`, appended and fsynced before its
 * id is used; ids are assigned here (1, 2, ...). A reader (apply in another process) re-reads
 * the file when it meets an id it does not know yet. One writer at a time (capture); no
 * compatibility checks (the registry's job).
 */
import { open, readFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SynclineError } from '../core/errors.js';
import type { RegisteredSchema, SchemaStore } from './schema-store.js';

interface StoredLine extends RegisteredSchema {
  id: number;
  subject: string;
}

export class LocalSchemaStore implements SchemaStore {
  private byId = new Map<number, StoredLine>();
  private loaded: Promise<void> | undefined;
  private writing: Promise<unknown> = Promise.resolve();
  /** The file ends inside a line (a torn append): the next append starts a new line. */
  private tornTail = false;

  constructor(readonly file: string) {}

  async register(subject: string, schema: RegisteredSchema): Promise<number> {
    const result = this.writing.then(async () => {
      await this.load(false);
      for (const s of this.byId.values()) {
        if (s.subject === subject && s.schemaType === schema.schemaType && s.schema === schema.schema) return s.id;
      }
      // Another process may have appended since: read again before picking the next id.
      await this.load(true);
      let max = 0;
      for (const s of this.byId.values()) {
        if (s.subject === subject && s.schemaType === schema.schemaType && s.schema === schema.schema) return s.id;
        max = Math.max(max, s.id);
      }
      const line: StoredLine = { id: max + 1, subject, schemaType: schema.schemaType, schema: schema.schema };
      await mkdir(dirname(this.file), { recursive: true });
      const fh = await open(this.file, 'a');
      try {
        await fh.write(`${this.tornTail ? '\n' : ''}${JSON.stringify(line)}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      this.tornTail = false;
      this.byId.set(line.id, line);
      return line.id;
    });
    this.writing = result.catch(() => undefined);
    return result;
  }

  async schemaById(id: number): Promise<RegisteredSchema> {
    await this.load(false);
    let s = this.byId.get(id);
    if (!s) {
      await this.load(true);
      s = this.byId.get(id);
    }
    if (!s) {
      throw new SynclineError(
        'SCHEMA_UNKNOWN',
        `schema id ${id} is not in ${this.file}: the record was written with another schema file (another stream.path, or a registry).\n  fix: use the stream.path the producer used, or set stream.schema_registry and its URL if the records were written through a registry`,
        { retriable: false },
      );
    }
    return { schemaType: s.schemaType, schema: s.schema };
  }

  private load(again: boolean): Promise<void> {
    if (this.loaded && !again) return this.loaded;
    this.loaded = this.read();
    return this.loaded;
  }

  private async read(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const byId = new Map<number, StoredLine>();
    this.tornTail = text.length > 0 && !text.endsWith('\n');
    for (const raw of text.split('\n')) {
      // A line cut short by a crash while appending was never acknowledged: skip it.
      if (!raw.endsWith('}')) continue;
      try {
        const line = JSON.parse(raw) as StoredLine;
        byId.set(line.id, line);
      } catch {
        // the same: a torn write
      }
    }
    this.byId = byId;
  }
}
