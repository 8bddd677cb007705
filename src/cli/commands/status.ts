import type { Command } from 'commander';
import { formatBytes } from '../../doctor/report.js';
import type { StatusReport } from '../../ops/status.js';
import { EXIT } from '../exit-codes.js';
import { configOption } from './options.js';

/** The text form of `syncline status` (one line per part, a table per partition). */
export function formatStatus(r: StatusReport, sinkType?: string): string {
  const out: string[] = [];
  if (r.source.reachable) out.push(`source    ${r.source.connection ?? '?'}, current WAL ${r.source.currentLsn ?? '?'}${r.source.error ? ` (error: ${r.source.error})` : ''}`);
  else out.push(`source    UNREACHABLE: ${r.source.error ?? '?'}`);
  const s = r.slot;
  if (s === null) out.push('slot      unknown (source unreachable)');
  else if (!s.exists && s.dropped) {
    out.push(`slot      ${s.name}: dropped after capture streamed from it; capture will not create it again (the changes since its last confirmed position are in no slot): syncline resync -c <config>, then syncline run, then syncline repair`);
  } else if (!s.exists) out.push(`slot      ${s.name}: does not exist yet (capture creates it)`);
  else {
    out.push(
      `slot      ${s.name}: ${s.active ? `active (pid ${s.activePid ?? '?'})` : 'inactive'}, confirmed ${s.confirmedFlushLsn ?? 'never'}, ` +
        `${s.lagBytes == null ? '?' : formatBytes(s.lagBytes)} behind the current WAL, retains ${s.retainedWalBytes == null ? '?' : formatBytes(s.retainedWalBytes)} (wal_status ${s.walStatus ?? '?'})`,
    );
  }
  for (const v of r.schemas) out.push(`schema    ${v.table}: _schema_version ${v.version} since LSN ${v.firstLsn} (${v.recordedAt})`);
  if (!r.stream.reachable) out.push(`stream    ${r.stream.broker}: ${r.stream.error ?? 'not reachable'}`);
  else {
    out.push(`stream    ${r.stream.broker}, ${r.stream.partitions.length} partitions, group ${r.consumer.group}: ${r.stream.recordsBehind} records behind`);
    const header = ['partition', 'end', 'sink position', 'committed', 'behind'];
    // `n/a`, not `-`, where the sink keeps no positions at all: the line below says why.
    const none = r.consumer.sinkPositions === 'not stored by this sink' ? 'n/a' : '-';
    const rows = r.stream.partitions.map((p) => [String(p.partition), String(p.end), p.sinkPosition === null ? none : String(p.sinkPosition), p.committed === null ? '-' : String(p.committed), String(p.recordsBehind)]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
    for (const row of [header, ...rows]) out.push(`  ${row.map((cell, i) => cell.padStart(widths[i] ?? 0)).join('  ')}`);
    for (const w of r.stream.warnings) out.push(`  WARNING ${w}`);
  }
  if (r.consumer.sinkPositions === 'error') out.push(`sink      positions not readable: ${r.consumer.error ?? '?'}`);
  else if (r.consumer.sinkPositions === 'none') out.push('sink      no positions stored yet');
  else if (r.consumer.sinkPositions === 'not stored by this sink') out.push(`sink      the ${sinkType ?? 'configured'} sink stores no positions: apply resumes from the group's committed offsets (column committed)`);
  if (r.dlq.error) out.push(`dlq       not readable: ${r.dlq.error}`);
  else out.push(`dlq       ${r.dlq.exists ? `${r.dlq.count} change(s) waiting` : '0 (not created)'}`);
  for (const b of r.dlq.blockedTables) out.push(`  BLOCKED ${b.table}: ${b.changes} change(s) held until the target is fixed: ${b.reason.split('\n')[0] ?? ''}`);
  return `${out.join('\n')}\n`;
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('show the slot, WAL lag, stream end offsets, consumer positions and dead-letter depth; exit 0, or 1 if the source is unreachable')
    .addOption(configOption())
    .option('--json', 'print the status as JSON')
    .action(async (opts: { config: string; json?: boolean }) => {
      const { loadConfigFile } = await import('../../config/load.js');
      const { collectStatus } = await import('../../ops/status.js');
      const config = loadConfigFile(opts.config);
      const report = await collectStatus(config);
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report, config.sink.type));
      process.exitCode = report.source.reachable ? EXIT.OK : EXIT.FAILURE;
    });
}
