/**
 * The promise of `make()` for `key`, made once and shared by every caller; a rejected one is
 * forgotten, so the next call (after the retry policy's wait) tries again.
 */
export function oncePerKey<K, V>(cache: Map<K, Promise<V>>, key: K, make: () => Promise<V>): Promise<V> {
  let p = cache.get(key);
  if (!p) {
    p = make();
    cache.set(key, p);
    p.catch(() => cache.delete(key));
  }
  return p;
}
