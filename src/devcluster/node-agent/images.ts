/**
 * The images the node agent can run, as local programs of this checkout. An image is
 * known by its repository name (the part after the last `/`, before the tag): `governor`
 * runs the built `dist/main.js` exactly as the Dockerfile's entrypoint does, and
 * `governor-sample-app` runs `dist/devcluster/sample-app.js`. Any other image cannot be
 * pulled here: its pod stays Pending with `ErrImagePull` and says so.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";

/** What a container of a known image runs, or why it cannot. */
export type ImageResolution =
  | { argv: string[]; user: { uid: number; gid: number } }
  | { reason: "ErrImagePull" | "CreateContainerConfigError"; message: string };

interface KnownImage {
  /** The program: the image's entrypoint. */
  entrypoint: string[];
  /** The image's default arguments (Dockerfile CMD). */
  cmd: string[];
  /** The image's USER. */
  user: { uid: number; gid: number };
  /** A file that must exist (the build output). */
  needs: string;
}

/** Resolves images against a checkout at `root`, run with the Node.js binary `node`. */
export class ImageTable {
  private readonly known: Map<string, KnownImage>;

  constructor(root: string, node: string) {
    const main = join(root, "dist/main.js");
    const sample = join(root, "dist/devcluster/sample-app.js");
    this.known = new Map([
      ["governor", { entrypoint: [node, main], cmd: ["run"], user: { uid: 1000, gid: 1000 }, needs: main }],
      [
        "governor-sample-app",
        { entrypoint: [node, sample], cmd: [], user: { uid: 1000, gid: 1000 }, needs: sample },
      ],
    ]);
  }

  /** The repository names this table knows. */
  names(): string[] {
    return [...this.known.keys()];
  }

  /** What `container` runs; see {@link ImageResolution}. */
  resolve(container: { image?: string; command?: string[]; args?: string[] }): ImageResolution {
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
    if (!existsSync(known.needs))
      return {
        reason: "ErrImagePull",
        message: `image "${image}" is not built: run npm run build (${known.needs} is missing)`,
      };
    if (container.command?.length)
      return {
        reason: "CreateContainerConfigError",
        message: `image "${image}": the node agent runs the image's own entrypoint; set args, not command`,
      };
    return { argv: [...known.entrypoint, ...(container.args ?? known.cmd)], user: known.user };
  }
}
