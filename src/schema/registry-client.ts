/**
 * A client of the Confluent Schema Registry REST API (also served by Apicurio Registry at
 * /apis/ccompat/v7, Redpanda, Karapace...), with Node's fetch:
 *
 *   POST /subjects/{subject}/versions {schema, schemaType}   → {id}   (same schema: same id)
 *   GET  /schemas/ids/{id}                                    → {schema, schemaType?}
 *   PUT  /config/{subject} {compatibility}                    → {compatibility}
 *
 * Ids are cached both ways (a schema's id never changes). Credentials in the URL
 * (`https://user:secret@host`) become a Basic Authorization header and never appear in
 * messages. Errors: 409 (incompatible) and 422 (invalid) are permanent with the fix in the
 * message; an unknown id is SCHEMA_UNKNOWN (permanent); an unreachable registry, a timeout,
 * 408/429/5xx are retriable.
 */
import { SynclineError } from '../core/errors.js';
import { redactUrl } from '../core/redact.js';
import { oncePerKey } from './once-per-key.js';
import type { RegisteredSchema, SchemaStore } from './schema-store.js';

export type CompatibilityLevel = 'BACKWARD' | 'BACKWARD_TRANSITIVE' | 'FORWARD' | 'FORWARD_TRANSITIVE' | 'FULL' | 'FULL_TRANSITIVE' | 'NONE';

export interface RegistryClientOptions {
  /** Base URL of the Confluent-compatible API, e.g. http://127.0.0.1:8081/apis/ccompat/v7. */
  url: string;
  /** Set on every subject before its first registration from this client; absent: leave the registry's. */
  compatibility?: CompatibilityLevel;
  /** Per request (default 10 s). */
  timeoutMs?: number;
}

const CONTENT_TYPE = 'application/vnd.schemaregistry.v1+json';

export class SchemaRegistryClient implements SchemaStore {
  private readonly base: string;
  /** For messages: the URL without credentials. */
  private readonly shown: string;
  private readonly headers: Record<string, string>;
  private readonly ids = new Map<string, Promise<number>>();
  private readonly schemas = new Map<number, Promise<RegisteredSchema>>();
  private readonly configured = new Map<string, Promise<void>>();

  constructor(private readonly options: RegistryClientOptions) {
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw new SynclineError('CONFIG_INVALID', `schema registry URL ${JSON.stringify(redactUrl(options.url))} is not a URL`, { retriable: false });
    }
    this.headers = { Accept: CONTENT_TYPE, 'Content-Type': CONTENT_TYPE };
    if (url.username || url.password) {
      const user = decodeURIComponent(url.username);
      const password = decodeURIComponent(url.password);
      this.headers.Authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
      url.username = '';
      url.password = '';
    }
    this.base = url.toString().replace(/\/+$/, '');
    this.shown = this.base;
  }

  register(subject: string, schema: RegisteredSchema): Promise<number> {
    return oncePerKey(this.ids, `${subject}\u0000${schema.schemaType}\u0000${schema.schema}`, () => this.registerOnce(subject, schema));
  }

  schemaById(id: number): Promise<RegisteredSchema> {
    return oncePerKey(this.schemas, id, async () => {
      const body = await this.request('GET', `/schemas/ids/${id}`, undefined, { what: `schema id ${id}` });
      const b = body as { schema?: unknown; schemaType?: unknown };
      if (typeof b.schema !== 'string') throw this.protocolError(`GET /schemas/ids/${id}`, body);
      const schemaType = b.schemaType === 'JSON' || b.schemaType === 'PROTOBUF' ? b.schemaType : 'AVRO';
      return { schemaType, schema: b.schema } satisfies RegisteredSchema;
    });
  }

  /** Sets the subject's compatibility level. */
  async setCompatibility(subject: string, level: CompatibilityLevel): Promise<void> {
    await this.request('PUT', `/config/${encodeURIComponent(subject)}`, { compatibility: level }, { what: `compatibility of subject ${subject}` });
  }

  private async registerOnce(subject: string, schema: RegisteredSchema): Promise<number> {
    const level = this.options.compatibility;
    if (level) await oncePerKey(this.configured, subject, () => this.setCompatibility(subject, level));
    const body: Record<string, string> = { schema: schema.schema };
    // AVRO is the API's default; older registries reject the field.
    if (schema.schemaType !== 'AVRO') body.schemaType = schema.schemaType;
    const res = (await this.request('POST', `/subjects/${encodeURIComponent(subject)}/versions`, body, { what: `a ${schema.schemaType} schema under subject ${subject}`, subject, level })) as { id?: unknown };
    if (typeof res.id !== 'number') throw this.protocolError(`POST /subjects/${subject}/versions`, res);
    this.schemas.set(res.id, Promise.resolve(schema));
    return res.id;
  }

  private async request(method: string, path: string, body: unknown, context: { what: string; subject?: string; level?: CompatibilityLevel }): Promise<unknown> {
    const url = `${this.base}${path}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: this.headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 10_000),
      });
    } catch (err) {
      const cause = err as Error & { cause?: { code?: string; message?: string } };
      const why = cause.cause?.code ?? cause.cause?.message ?? cause.message;
      throw new SynclineError('SCHEMA_REGISTRY_UNAVAILABLE', `schema registry ${this.shown} is unreachable (${method} ${path}: ${why}); retrying`, { retriable: true, cause: err });
    }
    const text = await res.text();
    let parsed: unknown = undefined;
    try {
      parsed = text === '' ? {} : JSON.parse(text);
    } catch {
      parsed = { message: text.slice(0, 300) };
    }
    if (res.ok) return parsed;
    const e = parsed as { error_code?: number; message?: string };
    const detail = redactUrl(e.message ?? text.slice(0, 300));
    const code = e.error_code ?? res.status;
    if (res.status === 409) {
      throw new SynclineError(
        'SCHEMA_INCOMPATIBLE',
        `schema registry ${this.shown} refused ${context.what}: it is not ${context.level ?? 'the subject\'s configured'}-compatible with the versions registered before (${detail}).\n` +
          `  fix: make the table change compatible (add columns instead of changing a column's type; a type change that is not a widening breaks old readers), ` +
          `or accept the break for this subject: set stream.schema_compatibility to a weaker level (e.g. NONE), or register under a new subject (stream.subject_strategy), then restart capture`,
        { retriable: false },
      );
    }
    if (res.status === 422) {
      throw new SynclineError('SCHEMA_INVALID', `schema registry ${this.shown} refused ${context.what} as invalid (error ${code}: ${detail}).\n  fix: report it: syncline generated a schema the registry does not accept`, { retriable: false });
    }
    if (res.status === 404 && path.startsWith('/schemas/ids/')) {
      throw new SynclineError(
        'SCHEMA_UNKNOWN',
        `schema registry ${this.shown} does not know ${context.what} (${detail}): the record was written against another registry, or its schema was deleted.\n  fix: point stream.schema_registry_url at the registry the producer used, or dead-letter and re-capture the change`,
        { retriable: false },
      );
    }
    if (res.status === 401 || res.status === 403) {
      throw new SynclineError('SCHEMA_REGISTRY_AUTH', `schema registry ${this.shown} refused access (${res.status}: ${detail}).\n  fix: put the right credentials in stream.schema_registry_url (https://user:password@host) or SYNCLINE_SCHEMA_REGISTRY_URL`, { retriable: false });
    }
    const retriable = res.status === 408 || res.status === 429 || res.status >= 500;
    throw new SynclineError('SCHEMA_REGISTRY_ERROR', `schema registry ${this.shown}: ${method} ${path} failed with ${res.status} (error ${code}: ${detail})`, { retriable });
  }

  private protocolError(what: string, body: unknown): SynclineError {
    return new SynclineError('SCHEMA_REGISTRY_ERROR', `schema registry ${this.shown}: unexpected answer to ${what}: ${JSON.stringify(body).slice(0, 200)}`, { retriable: false });
  }
}
