import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

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
);
