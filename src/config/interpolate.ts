/**
 * `${VAR}` and `${VAR:-default}` in string values, resolved from the environment.
 * `$${` escapes a literal `${`. Unset variables without a default are reported with the
 * path of the value that names them. The paths of values that took a variable are added to
 * `substituted`, so that a key the schema wants as a number or boolean (`port: ${PORT}`)
 * can be read as one: YAML typed the value before the variable was known.
 */
const PLACEHOLDER = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

export function interpolate(value: unknown, env: NodeJS.ProcessEnv, path: string, problems: string[], substituted?: Set<string>): unknown {
  if (typeof value === 'string') {
    return value.replace(PLACEHOLDER, (whole, name: string | undefined, fallback: string | undefined) => {
      if (name === undefined) return '${';
      substituted?.add(path);
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      problems.push(`${path || '(root)'}: environment variable ${name} is not set (use \${${name}:-default} for a default)`);
      return whole;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, env, `${path}[${i}]`, problems, substituted));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = interpolate(v, env, path ? `${path}.${k}` : k, problems, substituted);
    return out;
  }
  return value;
}

const YAML_NUMBER = /^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$/;

/**
 * The text an environment variable gave as the number or boolean the schema expects there,
 * as YAML would have read it written in place (`9464`, `0.02`, `true`); undefined when it is
 * not one, so the schema's own message about the value stands.
 */
export function coerceSubstituted(text: string, expected: 'number' | 'boolean'): number | boolean | undefined {
  const t = text.trim();
  if (expected === 'boolean') return t === 'true' ? true : t === 'false' ? false : undefined;
  return YAML_NUMBER.test(t) ? Number(t) : undefined;
}
