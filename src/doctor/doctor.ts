import type pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { CheckList, type DoctorReport } from './report.js';
import { checkDeadLetter } from './dead-letter-checks.js';
import { checkSink } from './sink-checks.js';
import { checkSource } from './source-checks.js';
import { checkStream } from './stream-checks.js';
import { checkWriters } from './writer-checks.js';

export type { DoctorCheck, DoctorReport } from './report.js';
export { formatReport } from './report.js';

/**
 * Checks every prerequisite of running `config`: source, stream, sink, dead-letter queue. Read-only: it
 * creates nothing (no publication, slot, stream directory or state table).
 */
export async function runDoctor(config: SynclineConfig, source: pg.ClientConfig, baseDir = process.cwd()): Promise<DoctorReport> {
  const list = new CheckList();
  const tables = await checkSource(config, source, list);
  await checkStream(config, baseDir, list);
  await checkSink(config, tables, list);
  await checkWriters(config, list);
  await checkDeadLetter(config, list);
  return list.report();
}
