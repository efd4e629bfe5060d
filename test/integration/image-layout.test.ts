import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { containerArgv } from "../../tools/devcluster/node-agent/container.js";
import { ImageTable, NODE_PATH } from "../../tools/devcluster/node-agent/images.js";
import { ROOT } from "../support/cluster.js";
import { buildOnce } from "../support/in-cluster.js";

/** Runs `argv` as a node-agent container would (root needed for its mount namespace). */
function runContainer(
  layout: string,
  argv: string[],
  mounts: { source: string; target: string }[] = [],
): Promise<{ code: number | null; output: string }> {
  const args = containerArgv({
    layout,
    node: process.execPath,
    serviceAccountDir: "-",
    hostname: "image-layout-test",
    readOnlyRootFilesystem: true,
    uid: 1000,
    gid: 1000,
    noNewPrivileges: true,
    mounts,
    argv,
  });
  return new Promise((resolve, reject) => {
    const child = spawn(args[0]!, args.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      env: { PATH: "/usr/bin:/bin" },
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, output }));
  });
}

/**
 * The node agent runs Governor's images as their build lays them out (tools/devcluster/node-agent/images.ts):
 * what works here works in the image, and what would break the image breaks here.
 */
describe("the rig runs images as the Dockerfile lays them out (integration)", function () {
  this.timeout(120_000);
  const made: string[] = [];
  const tempDir = (prefix: string) => {
    const dir = mkdtempSync(join(tmpdir(), prefix)); // mode 0700, as mktemp -d makes it
    made.push(dir);
    return dir;
  };

  before(function () {
    if (process.getuid?.() !== 0)
      throw new Error("these tests need root: containers get a mount namespace, as the node agent's do");
  });
  after(() => made.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

  const WORKER = "sources/parse-worker.js";

  it("the governor image loads every module of dist/ as uid 1000 from /app with production dependencies only", async function () {
    this.timeout(10 * 60_000);
    buildOnce();
    const resolved = await new ImageTable(ROOT, process.execPath, tempDir("layouts-")).resolve({
      image: "example.invalid/governor:dev",
      args: ["--version"],
    });
    if ("reason" in resolved) throw new Error(`${resolved.reason}: ${resolved.message}`);
    expect(resolved.argv).to.deep.equal([NODE_PATH, "/app/dist/main.js", "--version"]);
    const version = await runContainer(resolved.layout, resolved.argv);
    expect(version, version.output).to.include({ code: 0 });
    expect(version.output.trim()).to.match(/^\d+\.\d+\.\d+$/);

    const modules = readdirSync(join(resolved.layout, "dist"), { recursive: true, encoding: "utf8" }).filter(
      (f) => f.endsWith(".js") && f !== "main.js" && f !== WORKER,
    );
    expect(modules.length).to.be.greaterThan(50);
    // The parse worker's module runs only as a worker thread; it says "ready" once loaded.
    const importAll = `for (const m of ${JSON.stringify(modules)}) await import("/app/dist/" + m);
      const { Worker } = await import("node:worker_threads");
      const worker = new Worker("/app/dist/${WORKER}", { execArgv: [] });
      const first = await new Promise((ok, fail) => { worker.once("message", ok); worker.once("error", fail); });
      await worker.terminate();
      console.log("imported", process.cwd(), first);`;
    const all = await runContainer(resolved.layout, [NODE_PATH, "--input-type=module", "-e", importAll]);
    expect(all, all.output).to.include({ code: 0 });
    expect(all.output).to.contain("imported /app ready");
  });

  it("the governor-otlp-app image loads the OpenTelemetry SDK from /app (production dependencies and the SDK's own), and reads a volume mounted under /run", async function () {
    this.timeout(5 * 60_000);
    const resolved = await new ImageTable(ROOT, process.execPath, tempDir("layouts-")).resolve({
      image: "governor-otlp-app:dev",
    });
    if ("reason" in resolved) throw new Error(`${resolved.reason}: ${resolved.message}`);
    expect(resolved.argv).to.deep.equal([NODE_PATH, "/app/dist/tools/devcluster/otlp-app.js"]);
    expect(readdirSync(join(resolved.layout, "node_modules/@opentelemetry"))).to.include.members([
      "api",
      "core",
      "exporter-metrics-otlp-proto",
      "otlp-exporter-base",
      "otlp-transformer",
      "resources",
      "sdk-metrics",
    ]);
    const volume = tempDir("volume-");
    chmodSync(volume, 0o755); // as the node agent makes a volume's directory
    writeFileSync(join(volume, "token"), "a-token", { mode: 0o644 });
    const load = `await import("/app/dist/tools/devcluster/otlp-app.js").catch((e) => console.log(e.message));
      const { readFileSync } = await import("node:fs");
      console.log("token", readFileSync("/run/governor/token", "utf8"));`;
    const ran = await runContainer(
      resolved.layout,
      [NODE_PATH, "--input-type=module", "-e", load],
      [{ source: volume, target: "/run/governor" }],
    );
    expect(ran, ran.output).to.include({ code: 0 });
    // The app ran as far as its own check of its arguments: every import resolved.
    expect(ran.output).to.contain("--endpoint: the OTLP/HTTP metrics URL to export to");
    expect(ran.output).to.contain("token a-token");
  });

  it("a package dist/ imports that only a devDependency provides fails here as it would in the image, from a checkout in a private directory", async () => {
    const checkout = tempDir("checkout-");
    const pkg = (name: string) => {
      mkdirSync(join(checkout, "node_modules", name), { recursive: true });
      writeFileSync(
        join(checkout, "node_modules", name, "package.json"),
        JSON.stringify({ name, main: "index.js" }),
      );
      writeFileSync(join(checkout, "node_modules", name, "index.js"), `module.exports = "${name}";`);
    };
    pkg("runtime-dep");
    pkg("dev-only-dep");
    writeFileSync(join(checkout, "package.json"), JSON.stringify({ name: "app", type: "module" }));
    writeFileSync(
      join(checkout, "package-lock.json"),
      JSON.stringify({
        lockfileVersion: 3,
        packages: { "": {}, "node_modules/runtime-dep": {}, "node_modules/dev-only-dep": { dev: true } },
      }),
    );
    mkdirSync(join(checkout, "dist"));
    const table = new ImageTable(checkout, process.execPath, tempDir("layouts-"));
    const image = { image: "governor" };

    writeFileSync(
      join(checkout, "dist/main.js"),
      `import "runtime-dep"; import "dev-only-dep"; console.log("ran");`,
    );
    const broken = await table.resolve(image);
    if ("reason" in broken) throw new Error(`${broken.reason}: ${broken.message}`);
    const failed = await runContainer(broken.layout, broken.argv);
    expect(failed.code, failed.output).to.not.equal(0);
    expect(failed.output).to.contain("Cannot find package 'dev-only-dep'");

    writeFileSync(join(checkout, "dist/main.js"), `import "runtime-dep"; console.log("ran");`);
    const fixed = await table.resolve(image);
    if ("reason" in fixed) throw new Error(`${fixed.reason}: ${fixed.message}`);
    expect(fixed.layout).to.not.equal(broken.layout);
    const ran = await runContainer(fixed.layout, fixed.argv);
    expect(ran, ran.output).to.include({ code: 0 });
    expect(ran.output.trim()).to.equal("ran");
  });
});
