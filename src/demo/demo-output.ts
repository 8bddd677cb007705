/**
 * What `syncline demo` prints: lines for a person, or with `--json` one JSON object per line
 * (`{"event": ..., ...}`) for a script, the same events either way.
 */
export class DemoOutput {
  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly json: boolean,
  ) {}

  /** An event: `text` for a person, `fields` for a script. */
  event(event: string, fields: Record<string, unknown>, text: string): void {
    this.out.write(this.json ? `${JSON.stringify({ event, ...fields })}\n` : text);
  }

  /** A progress line: rewritten in place on a terminal, one line each otherwise. */
  progress(fields: Record<string, unknown>, text: string): void {
    if (this.json) this.event('progress', fields, '');
    else this.out.write(this.out.isTTY ? `\r${text}\u001b[K` : `${text}\n`);
  }
}
