import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { expect } from "chai";
import { ESLint, Linter } from "eslint";
import tseslint from "typescript-eslint";
import governor from "../../hack/eslint-layers.js";
import { ROOT } from "../support/cluster.js";

/** Lints `text` as if it were the file `path` (relative to the checkout) with the layers rule alone. */
function layerErrors(path: string, text: string): string[] {
  const linter = new Linter({ cwd: ROOT });
  const messages = linter.verify(
    text,
    [
      {
        files: ["**/*.ts"],
        languageOptions: { parser: tseslint.parser },
        linterOptions: { reportUnusedDisableDirectives: "off" },
        plugins: { governor },
        rules: { "governor/layers": "error" },
      },
    ],
    { filename: join(ROOT, path) },
  );
  return messages.map((m) => m.message);
}

describe("the layers of src/ are held by the lint rule (config)", () => {
  it("npm run lint applies the rule to every product file of src/, not to its tests", async () => {
    const eslint = new ESLint({ cwd: ROOT });
    const product = (await eslint.calculateConfigForFile(join(ROOT, "src/api/common.ts"))) as Linter.Config;
    expect(product.rules?.["governor/layers"]).to.deep.equal([2]);
    const test = (await eslint.calculateConfigForFile(
      join(ROOT, "src/api/quantity.test.ts"),
    )) as Linter.Config;
    expect(test.rules?.["governor/layers"]).to.equal(undefined);
  });

  it("fails an import up the floors: api may not use the controller", () => {
    expect(
      layerErrors("src/api/common.ts", `import { desiredHpa } from "../controller/hpa.js";`),
    ).to.deep.equal([
      "src/api (floor 2) may not import src/controller (floor 6): imports go down the floors of hack/eslint-layers.js only",
    ]);
  });

  it("fails an import between folders of one floor: the metrics API may not reach into the controllers", () => {
    const errors = layerErrors(
      "src/apiserver/server.ts",
      `import type { WorkQueue } from "../controller/work-queue.js";`,
    );
    expect(errors).to.have.length(1);
    expect(errors[0]).to.match(/^src\/apiserver \(floor 6\) may not import src\/controller \(floor 6\)/);
  });

  it("fails the product importing the rig or the tests", () => {
    expect(layerErrors("src/main.ts", `const demo = await import("../tools/demo/demo.js");`)).to.deep.equal([
      "src/ is the product: src/main.ts may not import tools/demo/demo.ts (tools/, test/, hack/ and bench/ stay out of it)",
    ]);
    expect(
      layerErrors("src/metrics/sampler.ts", `export { FakeKube } from "../../test/support/fake-kube.js";`),
    ).to.have.length(1);
  });

  it("fails an import whose path is computed (the floors could not be checked)", () => {
    expect(
      layerErrors("src/sources/registry.ts", "export const load = (kind: string) => import(`./${kind}.js`);"),
    ).to.deep.equal(["src/ imports by literal paths only: the floors cannot be checked otherwise"]);
  });

  it("fails an import that closes a circle, and names it", () => {
    const source = readFileSync(join(ROOT, "src/sources/source.ts"), "utf8");
    const errors = layerErrors(
      "src/sources/source.ts",
      `${source}\nimport type { QueryScope } from "./prometheus.js";\n`,
    );
    expect(errors).to.have.length(1);
    expect(errors[0]).to.match(
      /^this import closes a circle: src\/sources\/source\.ts → src\/sources\/prometheus\.ts → .*src\/sources\/source\.ts$/,
    );
  });

  it("passes every product file of src/ as it is", () => {
    const files = readdirSync(join(ROOT, "src"), { recursive: true, encoding: "utf8" }).filter(
      (f) => f.endsWith(".ts") && !f.endsWith(".test.ts"),
    );
    expect(files.length).to.be.greaterThan(80);
    const found = files.flatMap((f) =>
      layerErrors(`src/${f}`, readFileSync(join(ROOT, "src", f), "utf8")).map((m) => `src/${f}: ${m}`),
    );
    expect(found).to.deep.equal([]);
  });
});
