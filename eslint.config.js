// ESLint for the operator page's ES modules (api/static/js/): the recommended rules, in the browser, as modules.
// Run by `bash scripts/dev.sh test` (npx --no-install eslint api/static); the page itself has no build step.
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["node_modules/", ".venv/", "build/", "dist/"] },
  js.configs.recommended,
  {
    linterOptions: { reportUnusedDisableDirectives: "error" },
  },
  {
    files: ["api/static/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.browser },
    },
    rules: {
      // the page's promise: what the server sends is text, never HTML or code (the CSP refuses eval as well)
      "no-eval": "error",
      "no-implied-eval": "error",
      "no-new-func": "error",
      "no-restricted-properties": [
        "error",
        { property: "innerHTML", message: "put server text in with textContent or el(), never as HTML" },
        { property: "outerHTML", message: "put server text in with textContent or el(), never as HTML" },
        { property: "insertAdjacentHTML", message: "put server text in with el(), never as HTML" },
        { object: "document", property: "write", message: "build elements with el()" },
      ],
      eqeqeq: ["error", "always"],
      "no-var": "error",
      "prefer-const": "error",
    },
  },
  {
    files: ["eslint.config.js"],
    languageOptions: { sourceType: "module", globals: { ...globals.node } },
  },
];
