// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import governor from "./hack/eslint-layers.js";

export default tseslint.config(
  { ignores: ["dist/", "coverage/", ".cluster/", "node_modules/", "bench/results/"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": "error",
      // Interface implementations are async by contract even when a fake needs no await.
      "@typescript-eslint/require-await": "off",
      "no-restricted-properties": [
        "error",
        { object: "process", property: "exit", message: "Only src/main.ts may exit the process." },
        {
          object: "process",
          property: "env",
          message: "Only src/main.ts (and test/bench/hack) read the environment.",
        },
        { object: "process", property: "argv", message: "Only src/main.ts reads argv." },
      ],
    },
  },
  {
    // The floors of src/ (docs/architecture.md): imports go down only, stay in src/, close no circle.
    files: ["src/**/*.ts"],
    ignores: ["src/**/*.test.ts"],
    plugins: { governor },
    rules: { "governor/layers": "error" },
  },
  {
    // Entry points: the governor binary; the rig and demo (tools/), tests, hack and bench.
    files: ["src/main.ts", "tools/**", "test/**", "hack/**", "bench/**"],
    rules: { "no-restricted-properties": "off" },
  },
  {
    files: ["**/*.test.ts", "test/**"],
    rules: {
      // chai's `expect(x).to.be.true` is an expression statement by design.
      "@typescript-eslint/no-unused-expressions": "off",
      // Tests read parsed JSON answers field by field.
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-return": "off",
      "@typescript-eslint/no-explicit-any": "off",
    },
  },
  {
    files: ["**/*.js", "**/*.cjs"],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    files: ["**/*.cjs"],
    languageOptions: {
      sourceType: "commonjs",
      globals: { require: "readonly", module: "writable", process: "readonly" },
    },
  },
);
