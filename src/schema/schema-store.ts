/** Where schemas are registered and found by id: a schema registry, or a local file. */
export type SchemaType = 'AVRO' | 'JSON' | 'PROTOBUF';

export interface RegisteredSchema {
  schemaType: SchemaType;
  /** The schema text (Avro and JSON Schema: JSON; Protobuf: .proto). */
  schema: string;
}

export interface SchemaStore {
  /**
   * The id of `schema` under `subject`, registering it as the subject's next version when
   * it is new. Refused (SynclineError SCHEMA_INCOMPATIBLE / SCHEMA_INVALID, permanent) when
   * the subject's compatibility level forbids it or the schema is invalid.
   */
  register(subject: string, schema: RegisteredSchema): Promise<number>;
  /** The schema with this id; SynclineError SCHEMA_UNKNOWN (permanent) when there is none. */
  schemaById(id: number): Promise<RegisteredSchema>;
}
