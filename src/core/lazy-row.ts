import type { Row } from './change.js';

/**
 * A row image whose values are parsed from its JSON text on first use, for apply's hot path:
 * parsing every payload into an object was the largest single cost of apply (JSON.parse, a
 * third of its CPU), while the postgres sink only copies the values on as COPY text. A lazy
 * row keeps its JSON text (see `lazyJsonOf`) and its columns, and parses itself only when
 * something reads it as an object.
 *
 * It is a Proxy over an initially empty object that the parsed row is copied into on first
 * use, so it behaves as a plain object in every respect (property access, `in`, Object.keys,
 * spread, JSON.stringify, mutation). Reading it costs a trap per access: apply uses lazy rows
 * only for a sink that asks for them (Sink.lazyPayloads) and reads them through the helpers
 * below.
 */

/** The column names of a row in order, shared by every lazy row of that shape. */
export interface RowShape {
  readonly columns: readonly string[];
  /** The columns joined by NUL: equal for equal shapes. */
  readonly key: string;
}

const LAZY = Symbol('syncline.lazyRow');

class LazyRowHandler implements ProxyHandler<Row> {
  /** Set by any write through the proxy: the text no longer says what the row holds. */
  modified = false;
  private loaded = false;

  constructor(
    readonly json: string,
    readonly shape: RowShape,
  ) {}

  private load(target: Row): void {
    if (this.loaded) return;
    this.loaded = true;
    const parsed = JSON.parse(this.json) as Row;
    // Defined, not assigned: a column named __proto__ is an own property, as JSON.parse makes it.
    for (const k of Object.keys(parsed)) Reflect.defineProperty(target, k, { value: parsed[k], writable: true, enumerable: true, configurable: true });
  }

  get(target: Row, prop: string | symbol, receiver: unknown): unknown {
    if (prop === LAZY) return this;
    this.load(target);
    return Reflect.get(target, prop, receiver);
  }

  has(target: Row, prop: string | symbol): boolean {
    this.load(target);
    return Reflect.has(target, prop);
  }

  ownKeys(target: Row): (string | symbol)[] {
    this.load(target);
    return Reflect.ownKeys(target);
  }

  getOwnPropertyDescriptor(target: Row, prop: string | symbol): PropertyDescriptor | undefined {
    this.load(target);
    return Reflect.getOwnPropertyDescriptor(target, prop);
  }

  set(target: Row, prop: string | symbol, value: unknown): boolean {
    this.load(target);
    this.modified = true;
    return Reflect.set(target, prop, value);
  }

  deleteProperty(target: Row, prop: string | symbol): boolean {
    this.load(target);
    this.modified = true;
    return Reflect.deleteProperty(target, prop);
  }

  defineProperty(target: Row, prop: string | symbol, descriptor: PropertyDescriptor): boolean {
    this.load(target);
    this.modified = true;
    return Reflect.defineProperty(target, prop, descriptor);
  }

  preventExtensions(target: Row): boolean {
    this.load(target);
    this.modified = true;
    return Reflect.preventExtensions(target);
  }

  setPrototypeOf(target: Row, proto: object | null): boolean {
    this.modified = true;
    return Reflect.setPrototypeOf(target, proto);
  }
}

/**
 * A row parsed from `json` on first use: a JSON object of string or null values with exactly
 * `shape`'s columns, in order, without whitespace or escapes (no value holds a backslash or
 * control character, so none needs escaping in COPY text format either).
 */
export function lazyRow(json: string, shape: RowShape): Row {
  return new Proxy<Row>({}, new LazyRowHandler(json, shape));
}

function handlerOf(row: Row): LazyRowHandler | undefined {
  return (row as { [LAZY]?: LazyRowHandler })[LAZY];
}

/**
 * The JSON text of a lazy row nothing has written to (see `lazyRow` for its grammar: no
 * whitespace, no escapes, string or null values), undefined for any other row.
 */
export function lazyJsonOf(row: Row): string | undefined {
  const h = handlerOf(row);
  return h && !h.modified ? h.json : undefined;
}

const QUOTE = 0x22;

/** The values of a lazy row nothing has written to, in its columns' order, without parsing the row as an object. */
export function lazyValuesOf(row: Row): (string | null)[] | undefined {
  const h = handlerOf(row);
  if (!h || h.modified) return undefined;
  const json = h.json;
  const values: (string | null)[] = [];
  const end = json.length - 1;
  for (let p = 1; p < end; p++) {
    p = json.indexOf('"', p + 1) + 2;
    if (json.charCodeAt(p) === QUOTE) {
      const close = json.indexOf('"', p + 1);
      values.push(json.slice(p + 1, close));
      p = close + 1;
    } else {
      values.push(null);
      p += 4;
    }
  }
  return values;
}

/** The shape of a lazy row nothing has written to; undefined for any other row. */
export function lazyShapeOf(row: Row): RowShape | undefined {
  const h = handlerOf(row);
  return h && !h.modified ? h.shape : undefined;
}

/** The row's column names in order (a lazy row's without parsing it). */
export function columnsOf(row: Row): readonly string[] {
  return lazyShapeOf(row)?.columns ?? Object.keys(row);
}

/** The row's column names joined by NUL: equal for rows with the same columns in the same order. */
export function shapeKeyOf(row: Row): string {
  return lazyShapeOf(row)?.key ?? Object.keys(row).join('\u0000');
}
