/**
 * The images the node agent can run, assembled from a checkout the way their image build
 * lays them out, and mounted read-only into the container at `/app` — the container never
 * sees the checkout's path, so a checkout in a private directory (root's home, `mktemp -d`)
 * works, and a production dependency that only a devDependency provided fails here as it
 * would in the real image.
 *
 * An image is known by its repository name (the part after the last `/`, before the tag):
 * - `governor`: as the Dockerfile builds it — `/app/dist` (the checkout's `npm run build`),
 *   `/app/package.json`, `/app/node_modules` with the production dependencies only (the
 *   lockfile's packages not marked dev, as `npm prune --omit=dev` leaves them), `WORKDIR
 *   /app`, `ENTRYPOINT ["node", "/app/dist/main.js"]`, `CMD ["run"]`, `USER 1000:1000`;
 * - `governor-sample-app`: the sample app (sample-app.ts) compiled alone into `/app/dist`,
 *   with the same package.json and production dependencies, as uid 1000;
 * - `governor-otlp-app`: the OpenTelemetry app (otlp-app.ts) the same way, with the
 *   OpenTelemetry SDK packages it imports and theirs added, as uid 1000;
 * - `governor-otelcol`: the OpenTelemetry Collector hack/otelcol.sh builds, alone, at
 *   `/app/otelcol` (its image's entrypoint), as uid 10001 as the Collector's images run.
 * `node` is the agent's Node.js binary, mounted at `/usr/local/bin/node` as the node image
 * has it. Any other image cannot be pulled here: its pod stays Pending with `ErrImagePull`
 * and says so.
 *
 * A layout is assembled once per content (a hash of what goes into it), in the background
 * of the container that first needs it, under `layoutsDir`; the newest three of each image
 * are kept.
 */
import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { constants, existsSync } from "node:fs";
import {
  access,
  chmod,
  cp,
  mkdir,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  utimes,
  writeFile,
} from "node:fs/promises";
import { join, relative } from "node:path";
import { promisify } from "node:util";

/** Where a known image's files are mounted in its container (the Dockerfile's WORKDIR). */
export const APP_DIR = "/app";
/** Where the image's Node.js binary is (as in the node image). */
export const NODE_PATH = "/usr/local/bin/node";
const KEEP_LAYOUTS = 3;

/** What a container of a known image runs, or why it cannot. */
export type ImageResolution =
  | {
      /** The program and its arguments, as paths inside the container. */
      argv: string[];
      user: { uid: number; gid: number };
      /** The assembled layout on the host, mounted read-only at {@link APP_DIR}. */
      layout: string;
      /** The Node.js binary on the host, mounted at {@link NODE_PATH}. */
      node: string;
    }
  | { reason: "ErrImagePull" | "CreateContainerConfigError" | "CreateContainerError"; message: string };

interface KnownImage {
  /** The program inside the container: the image's entrypoint. */
  entrypoint: string[];
  /** The image's default arguments (Dockerfile CMD). */
  cmd: string[];
  /** The image's USER. */
  user: { uid: number; gid: number };
  /** Why this image cannot be assembled from the checkout now, if it cannot. */
  missing(): string | undefined;
  /** The files whose content makes the layout (a change means a new layout). */
  inputs(): Promise<string[]>;
  /** Writes the image's own files (not package.json/node_modules) into `app`. */
  build(app: string): Promise<void>;
  /** The lockfile's installed paths the image holds, with package.json; none for a program of its own. */
  packages?: (lock: Lockfile) => string[];
}

/** The packages the OpenTelemetry app imports (otlp-app.ts), besides the production ones. */
const OTLP_APP_PACKAGES = [
  "@opentelemetry/api",
  "@opentelemetry/exporter-metrics-otlp-proto",
  "@opentelemetry/resources",
  "@opentelemetry/sdk-metrics",
];

const run = promisify(execFile);

/** Resolves images against a checkout at `root`, run with the Node.js binary `node`. */
export class ImageTable {
  private readonly known: Map<string, KnownImage>;
  private readonly assembling = new Map<string, Promise<void>>();

  constructor(
    private readonly root: string,
    private readonly node: string,
    /** Where layouts are assembled (the agent's state directory). */
    private readonly layoutsDir: string,
  ) {
    const dist = join(root, "dist");
    const user = { uid: 1000, gid: 1000 };
    const tsApp = (name: string, tsconfig: string, extra: string[] = []): KnownImage => ({
      entrypoint: [NODE_PATH, `${APP_DIR}/dist/tools/devcluster/${name}.js`],
      cmd: [],
      user,
      missing: () => undefined,
      inputs: async () =>
        [...(await filesUnder(join(root, "src"))), ...(await filesUnder(join(root, "tools")))].filter(
          (f) => f.endsWith(".ts") && !f.endsWith(".test.ts"),
        ),
      build: async (app) => {
        const tsc = join(root, "node_modules/typescript/bin/tsc");
        const project = join(root, "tools/devcluster", tsconfig);
        await run(node, [tsc, "-p", project, "--outDir", join(app, "dist")], { cwd: root });
      },
      packages: (lock) => [...new Set([...productionPackages(lock), ...packageClosure(lock, extra)])],
    });
    const otelcol = () => {
      try {
        return execFileSync("bash", [join(root, "hack/otelcol.sh"), "--path"], { encoding: "utf8" }).trim();
      } catch {
        return undefined;
      }
    };
    this.known = new Map<string, KnownImage>([
      [
        "governor",
        {
          entrypoint: [NODE_PATH, `${APP_DIR}/dist/main.js`],
          cmd: ["run"],
          user,
          missing: () =>
            existsSync(join(dist, "main.js")) ? undefined : `run npm run build (${dist}/main.js is missing)`,
          inputs: async () => (await filesUnder(dist)).filter((f) => !f.endsWith(".map")),
          build: (app) =>
            cp(dist, join(app, "dist"), { recursive: true, filter: (f) => !f.endsWith(".map") }),
        },
      ],
      ["governor-sample-app", tsApp("sample-app", "tsconfig.sample-app.json")],
      ["governor-otlp-app", tsApp("otlp-app", "tsconfig.otlp-app.json", OTLP_APP_PACKAGES)],
      [
        "governor-otelcol",
        {
          entrypoint: [`${APP_DIR}/otelcol`],
          cmd: ["--config=/etc/otelcol/config.yaml"],
          user: { uid: 10001, gid: 10001 },
          missing: () => {
            const bin = otelcol();
            return bin && existsSync(bin)
              ? undefined
              : "run bash hack/otelcol.sh (the Collector is not built)";
          },
          inputs: async () => [otelcol()!],
          build: (app) => cp(otelcol()!, join(app, "otelcol")),
          packages: () => [],
        },
      ],
    ]);
  }

  /** The repository names this table knows. */
  names(): string[] {
    return [...this.known.keys()];
  }

  /** What `container` runs; see {@link ImageResolution}. */
  async resolve(container: {
    image?: string;
    command?: string[];
    args?: string[];
  }): Promise<ImageResolution> {
    const image = container.image ?? "";
    const repo =
      image
        .replace(/@.*$/, "")
        .replace(/:[^/:]*$/, "")
        .split("/")
        .pop() ?? "";
    const known = this.known.get(repo);
    if (!known)
      return {
        reason: "ErrImagePull",
        message: `image "${image}" is not one the governor node agent can run (it runs ${this.names().join(", ")} from this checkout)`,
      };
    const missing = known.missing();
    if (missing) return { reason: "ErrImagePull", message: `image "${image}" is not built: ${missing}` };
    if (container.command?.length)
      return {
        reason: "CreateContainerConfigError",
        message: `image "${image}": the node agent runs the image's own entrypoint; set args, not command`,
      };
    const mode = (await stat(this.node)).mode;
    if ((mode & 0o005) !== 0o005)
      return {
        reason: "CreateContainerError",
        message: `the node agent's Node.js binary ${this.node} is not readable and executable by every user (mode ${(mode & 0o777).toString(8)}): the image's USER ${known.user.uid} could not run it`,
      };
    let layout: string;
    try {
      layout = await this.layout(repo, known);
    } catch (err) {
      return {
        reason: "ErrImagePull",
        message: `image "${image}" could not be assembled from the checkout: ${(err as Error).message.slice(0, 500)}`,
      };
    }
    return {
      argv: [...known.entrypoint, ...(container.args ?? known.cmd)],
      user: known.user,
      layout,
      node: this.node,
    };
  }

  /** The layout of `repo` for the checkout's current content, assembled if new. */
  private async layout(repo: string, image: KnownImage): Promise<string> {
    const lock = join(this.root, "package-lock.json");
    const pkg = join(this.root, "package.json");
    const hash = createHash("sha256");
    for (const file of [pkg, lock, ...(await image.inputs())].sort()) {
      hash.update(relative(this.root, file)).update("\0");
      hash.update(await readFile(file)).update("\0");
    }
    const dir = join(this.layoutsDir, `${repo}-${hash.digest("hex").slice(0, 16)}`);
    const app = join(dir, "app");
    if (existsSync(join(dir, "complete"))) {
      // Used now: among the newest, so pruning keeps it while its containers may run.
      const now = new Date();
      await utimes(dir, now, now);
      return app;
    }
    let pending = this.assembling.get(dir);
    if (!pending) {
      pending = this.assemble(dir, image, pkg, lock).finally(() => this.assembling.delete(dir));
      this.assembling.set(dir, pending);
    }
    await pending;
    await this.prune(repo, dir);
    return app;
  }

  private async assemble(dir: string, image: KnownImage, pkg: string, lock: string): Promise<void> {
    const tmp = `${dir}.partial`;
    await rm(tmp, { recursive: true, force: true });
    const app = join(tmp, "app");
    await mkdir(app, { recursive: true });
    await image.build(app);
    const lockfile = JSON.parse(await readFile(lock, "utf8")) as Lockfile;
    const packages = (image.packages ?? productionPackages)(lockfile);
    if (packages.length > 0) await cp(pkg, join(app, "package.json"));
    for (const path of packages) {
      const from = join(this.root, path);
      // An optional package of another platform is not installed: nothing to copy.
      // Its nested node_modules are packages of their own in the lockfile.
      const own = (source: string) => !relative(from, source).split("/").includes("node_modules");
      if (existsSync(from)) await cp(from, join(app, path), { recursive: true, filter: own });
    }
    // As in an image: every file readable by every user, whatever the checkout's umask.
    await chmodTree(app);
    await writeFile(join(tmp, "complete"), "");
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  }

  /** Keeps the newest {@link KEEP_LAYOUTS} layouts of `repo` (and always `current`). */
  private async prune(repo: string, current: string): Promise<void> {
    const entries = (await readdir(this.layoutsDir)).filter(
      (e) =>
        e.startsWith(`${repo}-`) &&
        !e.endsWith(".partial") &&
        /^[0-9a-f]{16}$/.test(e.slice(repo.length + 1)),
    );
    const dated = await Promise.all(
      entries.map(async (e) => ({
        dir: join(this.layoutsDir, e),
        at: (await stat(join(this.layoutsDir, e))).mtimeMs,
      })),
    );
    dated.sort((a, b) => b.at - a.at);
    for (const { dir } of dated.slice(KEEP_LAYOUTS))
      if (dir !== current) await rm(dir, { recursive: true, force: true });
  }
}

interface Lockfile {
  packages?: Record<
    string,
    {
      dev?: boolean;
      devOptional?: boolean;
      dependencies?: Record<string, string>;
      optionalDependencies?: Record<string, string>;
      peerDependencies?: Record<string, string>;
    }
  >;
}

/**
 * The lockfile's installed paths that `npm prune --omit=dev` keeps: every package not
 * marked `dev` or `devOptional`. Nested paths are listed on their own.
 */
export function productionPackages(lock: Lockfile): string[] {
  return Object.entries(lock.packages ?? {})
    .filter(([path, p]) => path.startsWith("node_modules/") && !p.dev && !p.devOptional)
    .map(([path]) => path);
}

/**
 * The lockfile's installed paths of the packages `roots` (by name, as the checkout's root
 * requires them) and of everything they depend on, resolved as Node.js does: the nearest
 * `node_modules` up from the package that needs it.
 */
export function packageClosure(lock: Lockfile, roots: string[]): string[] {
  const packages = lock.packages ?? {};
  const found = new Set<string>();
  const resolve = (from: string, name: string): string | undefined => {
    for (let dir = from; ;) {
      const path = `${dir ? `${dir}/` : ""}node_modules/${name}`;
      if (packages[path]) return path;
      if (!dir) return undefined;
      const up = dir.lastIndexOf("/node_modules/");
      dir = up < 0 ? "" : dir.slice(0, up);
    }
  };
  const visit = (path: string | undefined) => {
    if (!path || found.has(path)) return;
    found.add(path);
    const p = packages[path]!;
    for (const name of Object.keys({ ...p.dependencies, ...p.optionalDependencies, ...p.peerDependencies }))
      visit(resolve(path, name));
  };
  for (const name of roots) visit(resolve("", name));
  return [...found];
}

async function filesUnder(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

async function chmodTree(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const path = join(e.parentPath, e.name);
    if (e.isDirectory()) await chmod(path, 0o755);
    else if (e.isFile()) {
      const executable = ((await stat(path)).mode & 0o100) !== 0;
      await chmod(path, executable ? 0o755 : 0o644);
    }
  }
  await access(dir, constants.R_OK);
}
