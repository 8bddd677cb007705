/**
 * Subject names (Confluent's subject name strategies), for the value and the key schema of
 * a table's changes on `topic`:
 *   topic         `<topic>-value`, `<topic>-key` (one subject for every table: versions of
 *                 different tables follow each other, so its compatibility level must allow
 *                 that: see README)
 *   record        `<schema>.<table>-value`, `<schema>.<table>-key`
 *   topic_record  `<topic>-<schema>.<table>-value`, `<topic>-<schema>.<table>-key`
 */
export type SubjectStrategy = 'topic' | 'record' | 'topic_record';

export function subjectsOf(strategy: SubjectStrategy, topic: string, table: { schema: string; table: string }): { value: string; key: string } {
  const base = strategy === 'topic' ? topic : strategy === 'record' ? `${table.schema}.${table.table}` : `${topic}-${table.schema}.${table.table}`;
  return { value: `${base}-value`, key: `${base}-key` };
}
