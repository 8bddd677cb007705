/** Removes passwords from connection URLs (`scheme://user:secret@host` → `scheme://user:***@host`). */
export function redactUrl(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*):([^@\s/]*)@/gi, '$1:***@').replace(/(password=)[^&\s]*/gi, '$1***');
}
