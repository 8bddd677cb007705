/** Reading prom-client's values back: what the sampler and /api/status add up. */
export interface MetricValue {
  value: number;
  labels: Partial<Record<string, string | number>>;
}

export function sum(values: readonly MetricValue[]): number {
  let s = 0;
  for (const v of values) s += v.value;
  return s;
}

export function max(values: readonly MetricValue[]): number {
  let m = 0;
  for (const v of values) if (v.value > m) m = v.value;
  return m;
}

export function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
