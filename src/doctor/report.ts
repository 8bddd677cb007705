import { redactUrl } from '../core/redact.js';

/** One prerequisite checked by `syncline doctor`. */
export interface DoctorCheck {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  /** What was found. */
  detail: string;
  /** For failures (and some warnings): the exact change that fixes it. */
  fix?: string;
}

export interface DoctorReport {
  /** True when no check failed (warnings allowed). */
  ok: boolean;
  checks: DoctorCheck[];
}

/** Collects checks; every text passes through redactUrl so no password is ever printed. */
export class CheckList {
  readonly checks: DoctorCheck[] = [];

  ok(name: string, detail: string): void {
    this.add({ name, status: 'ok', detail });
  }

  warn(name: string, detail: string, fix?: string): void {
    this.add(fix === undefined ? { name, status: 'warn', detail } : { name, status: 'warn', detail, fix });
  }

  fail(name: string, detail: string, fix: string): void {
    this.add({ name, status: 'fail', detail, fix });
  }

  add(check: DoctorCheck): void {
    const c: DoctorCheck = { name: check.name, status: check.status, detail: redactUrl(check.detail) };
    if (check.fix !== undefined) c.fix = redactUrl(check.fix);
    this.checks.push(c);
  }

  report(): DoctorReport {
    return { ok: this.checks.every((c) => c.status !== 'fail'), checks: this.checks };
  }
}

/** Human-readable report: one line per check, the fix indented under failures and warnings. */
export function formatReport(report: DoctorReport): string {
  const width = Math.min(40, Math.max(...report.checks.map((c) => c.name.length), 10));
  const label = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' } as const;
  const lines = report.checks.map((c) => {
    let line = `${label[c.status]}  ${c.name.padEnd(width)}  ${c.detail}`;
    if (c.fix !== undefined) line += `\n${' '.repeat(width + 8)}fix: ${c.fix}`;
    return line;
  });
  const count = (s: DoctorCheck['status']): number => report.checks.filter((c) => c.status === s).length;
  lines.push('', `${count('ok')} ok, ${count('warn')} warning(s), ${count('fail')} failed: ${report.ok ? 'ready to run' : 'fix the failures above, then run syncline doctor again'}`);
  return `${lines.join('\n')}\n`;
}

export function formatBytes(n: bigint | number): string {
  const v = Number(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = v;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${x.toFixed(1)} ${units[i]}`;
}
