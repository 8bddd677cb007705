/** Exit codes of every command (documented in the README). */
export const EXIT = {
  OK: 0,
  /** Runtime failure; for `verify`: drift found. */
  FAILURE: 1,
  /** Invalid configuration or usage; for `verify`: could not compare. */
  CONFIG: 2,
} as const;
