// @ts-check
/**
 * The lint rule `governor/layers`: src/ is a house of floors (docs/architecture.md draws
 * it). A file of src/ may import its own folder and the folders of lower floors only —
 * never a folder of its own floor or above, never tools/, test/, hack/ or bench/ — and no
 * import may close a circle of src/ files. Tests beside the code (`*.test.ts`) are not
 * held to it.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

/** The checkout's src/, wherever eslint runs from. */
const SRC = resolve(dirname(fileURLToPath(import.meta.url)), "..", "src");
const ROOT = dirname(SRC);

/** The floors, lowest first: each entry is a folder of src/ (or a file at its top). */
export const FLOORS = [
  ["errors.ts"],
  ["util"],
  ["api", "selectors", "certs"],
  ["k8s", "manifests", "autoscaling"],
  ["sources"],
  ["metrics"],
  ["apiserver", "controller"],
  ["upstream", "explain"],
  ["app"],
  ["main.ts"],
];

const floorOf = new Map(FLOORS.flatMap((rooms, floor) => rooms.map((room) => [room, floor])));

/** `src/<room>/…` → room; undefined outside src/. */
function roomOf(/** @type {string} */ srcDir, /** @type {string} */ file) {
  const rel = relative(srcDir, file);
  if (rel.startsWith("..") || rel === "") return undefined;
  return rel.split(sep)[0];
}

/** Relative import specifiers of a file's text (static, type-only, side-effect, re-exports, dynamic), comments left out. */
function importsOf(/** @type {string} */ text) {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`\\])\/\/.*$/gm, "$1");
  const specs = [];
  for (const m of code.matchAll(/(?:^|[\s;])(?:import|export)\s[^;]*?\sfrom\s*["'](\.{1,2}\/[^"']+)["']/g))
    specs.push(/** @type {string} */ (m[1]));
  for (const m of code.matchAll(/(?:^|[\s;])import\s*["'](\.{1,2}\/[^"']+)["']/g))
    specs.push(/** @type {string} */ (m[1]));
  for (const m of code.matchAll(/\bimport\s*\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g))
    specs.push(/** @type {string} */ (m[1]));
  return specs;
}

const toFile = (/** @type {string} */ from, /** @type {string} */ spec) =>
  resolve(dirname(from), spec).replace(/\.js$/, ".ts");

/** @type {Map<string, {mtime: number, targets: string[]}>} */
const scanned = new Map();
function targetsOf(/** @type {string} */ file) {
  if (!existsSync(file)) return [];
  const mtime = statSync(file).mtimeMs;
  const known = scanned.get(file);
  if (known && known.mtime === mtime) return known.targets;
  const targets = importsOf(readFileSync(file, "utf8")).map((spec) => toFile(file, spec));
  scanned.set(file, { mtime, targets });
  return targets;
}

/** A path of imports from `start` back to `goal` among src/ files, if there is one. */
function pathBack(/** @type {string} */ srcDir, /** @type {string} */ start, /** @type {string} */ goal) {
  /** @type {Map<string, string | undefined>} */
  const cameFrom = new Map([[start, undefined]]);
  const queue = [start];
  while (queue.length) {
    const file = /** @type {string} */ (queue.shift());
    for (const next of targetsOf(file)) {
      if (!roomOf(srcDir, next) || next.endsWith(".test.ts") || cameFrom.has(next)) continue;
      cameFrom.set(next, file);
      if (next === goal) {
        const path = [next];
        for (let at = cameFrom.get(next); at; at = cameFrom.get(at)) path.unshift(at);
        return path;
      }
      queue.push(next);
    }
  }
  return undefined;
}

/** @type {import("eslint").Rule.RuleModule} */
const layers = {
  meta: {
    type: "problem",
    docs: { description: "src/ imports only downward, only within src/, and in no circle" },
    schema: [],
  },
  create(context) {
    const file = context.filename;
    const srcDir = SRC;
    const room = roomOf(srcDir, file);
    if (!room || file.endsWith(".test.ts")) return {};
    const floor = floorOf.get(room);
    const check = (/** @type {import("estree").Node} */ node, /** @type {unknown} */ spec) => {
      if (typeof spec !== "string" || !spec.startsWith(".")) return;
      const target = toFile(file, spec);
      const targetRoom = roomOf(srcDir, target);
      if (!targetRoom)
        return context.report({
          node,
          message: `src/ is the product: src/${room} may not import ${relative(ROOT, target)} (tools/, test/, hack/ and bench/ stay out of it)`,
        });
      if (floor === undefined)
        return context.report({
          node,
          message: `src/${room} is on no floor: add it to FLOORS in hack/eslint-layers.js`,
        });
      const targetFloor = floorOf.get(targetRoom);
      if (targetRoom !== room && (targetFloor === undefined || targetFloor >= floor))
        return context.report({
          node,
          message: `src/${room} (floor ${floor}) may not import src/${targetRoom} (floor ${targetFloor ?? "none"}): imports go down the floors of hack/eslint-layers.js only`,
        });
      const circle = pathBack(srcDir, target, file);
      if (circle)
        context.report({
          node,
          message: `this import closes a circle: ${[file, ...circle].map((f) => relative(ROOT, f)).join(" → ")}`,
        });
    };
    return {
      ImportDeclaration: (node) => check(node, node.source.value),
      ExportNamedDeclaration: (node) => node.source && check(node, node.source.value),
      ExportAllDeclaration: (node) => check(node, node.source.value),
      ImportExpression: (node) =>
        node.source.type === "Literal"
          ? check(node, node.source.value)
          : context.report({
              node,
              message: "src/ imports by literal paths only: the floors cannot be checked otherwise",
            }),
    };
  },
};

/** The plugin eslint.config.js loads as `governor`. */
export default { rules: { layers } };
