/**
 * CRC-32C (Castagnoli), the checksum of Kafka's v2 record batches, slicing-by-8: eight
 * 256-entry tables (one array, so each lookup is one load) let the loop take eight bytes per
 * step instead of one. Neither Node nor zlib has CRC-32C; kafkajs's byte-at-a-time loop was
 * ~5 % of a Kafka capture's CPU, and this one is about twice as fast.
 */
const POLY = 0x82f63b78; // the Castagnoli polynomial, bit-reversed

/** Table k (at k * 256) advances a byte through k further zero bytes. */
const T = new Int32Array(256 * 8);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
  T[n] = c;
}
for (let k = 1; k < 8; k++) {
  for (let n = 0; n < 256; n++) {
    const prev = T[(k - 1) * 256 + n] as number;
    T[k * 256 + n] = (T[prev & 0xff] as number) ^ (prev >>> 8);
  }
}

/** CRC-32C of `buf[start, end)`, as an unsigned 32-bit number. */
export function crc32c(buf: Uint8Array, start = 0, end = buf.length): number {
  let crc = -1;
  let i = start;
  for (const stop = end - 8; i <= stop; i += 8) {
    const a = crc ^ ((buf[i] as number) | ((buf[i + 1] as number) << 8) | ((buf[i + 2] as number) << 16) | ((buf[i + 3] as number) << 24));
    crc =
      (T[1792 + (a & 0xff)] as number) ^
      (T[1536 + ((a >>> 8) & 0xff)] as number) ^
      (T[1280 + ((a >>> 16) & 0xff)] as number) ^
      (T[1024 + (a >>> 24)] as number) ^
      (T[768 + (buf[i + 4] as number)] as number) ^
      (T[512 + (buf[i + 5] as number)] as number) ^
      (T[256 + (buf[i + 6] as number)] as number) ^
      (T[buf[i + 7] as number] as number);
  }
  for (; i < end; i++) crc = (T[(crc ^ (buf[i] as number)) & 0xff] as number) ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}
