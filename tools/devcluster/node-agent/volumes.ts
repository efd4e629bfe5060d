/**
 * The pod volumes the node agent fills, as the kubelet's volume plugins do for these
 * kinds: `configMap`, and `projected` with `serviceAccountToken` sources (a token bound to
 * the pod for the source's audience, renewed at 80 % of its life) and `configMap` sources.
 * Each volume is a directory of the pod's, bind-mounted read-only at a container's
 * `mountPath` — which must be under `/run` or `/var/run` here (the container's own tmpfs),
 * so nothing is made on the host's root. A kind the agent does not fill, or a ConfigMap
 * that is missing and not optional, keeps the pod from starting, saying why.
 */
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import type { KubeClient } from "../../../src/k8s/client.js";
import { KubeApiError } from "../../../src/k8s/client.js";
import type { ContainerSpec, Pod } from "./pod-spec.js";

/** The kubelet's default for a projected token's life, and the API's least. */
const DEFAULT_TOKEN_SECONDS = 3600;
const MIN_TOKEN_SECONDS = 600;

interface KeyToPath {
  key: string;
  path: string;
}

interface ConfigMapSource {
  name: string;
  items?: KeyToPath[];
  optional?: boolean;
}

/** A pod volume as the agent reads it. */
export interface Volume {
  name: string;
  configMap?: ConfigMapSource;
  projected?: {
    sources: {
      serviceAccountToken?: { audience?: string; expirationSeconds?: number; path: string };
      configMap?: ConfigMapSource;
    }[];
  };
  [other: string]: unknown;
}

/** A volume mounted into a container: the host directory and where the container sees it. */
export interface Mount {
  source: string;
  target: string;
}

/** See the module comment. */
export class PodVolumes {
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly root: string;

  constructor(
    private readonly client: KubeClient,
    private readonly pod: Pod,
    podDir: string,
    private readonly log: (msg: string, fields?: Record<string, unknown>) => void,
  ) {
    this.root = join(podDir, "volumes");
  }

  /** Fills every volume; why one cannot be, if one cannot. */
  async setUp(): Promise<string | undefined> {
    this.stop();
    for (const v of this.pod.spec.volumes ?? []) {
      const dir = join(this.root, v.name);
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      try {
        if (v.configMap) await this.configMap(dir, v.configMap);
        else if (v.projected) {
          for (const s of v.projected.sources) {
            if (s.configMap) await this.configMap(dir, s.configMap);
            else if (s.serviceAccountToken) await this.token(dir, s.serviceAccountToken);
            else
              return `volume "${v.name}": the governor node agent fills projected serviceAccountToken and configMap sources only`;
          }
        } else
          return `volume "${v.name}": the governor node agent fills configMap and projected volumes only`;
      } catch (err) {
        return `MountVolume.SetUp failed for volume "${v.name}": ${(err as Error).message}`;
      }
    }
    return undefined;
  }

  /** Where `container`'s volumeMounts come from and go, or why they cannot be made. */
  mountsOf(container: ContainerSpec): Mount[] | string {
    const mounts: Mount[] = [];
    for (const m of container.volumeMounts ?? []) {
      if (!(this.pod.spec.volumes ?? []).some((v) => v.name === m.name))
        return `volumeMount "${m.name}": the pod has no volume of that name`;
      const target = normalize(m.mountPath).replace(/^\/var\/run\//, "/run/");
      if (!target.startsWith("/run/") || /[\t\n]/.test(target))
        return `volumeMount "${m.name}": the governor node agent mounts volumes under /run or /var/run only, not ${m.mountPath}`;
      mounts.push({ source: join(this.root, m.name), target });
    }
    return mounts;
  }

  /** Stops renewing tokens. */
  stop(): void {
    for (const t of this.timers.splice(0)) clearTimeout(t);
  }

  /** Stops, and removes the volumes' files. */
  remove(): void {
    this.stop();
    rmSync(this.root, { recursive: true, force: true });
  }

  private async configMap(dir: string, source: ConfigMapSource): Promise<void> {
    const { namespace } = this.pod.metadata;
    let data: Record<string, string>;
    try {
      data =
        (
          await this.client.get<{ data?: Record<string, string> }>(
            `/api/v1/namespaces/${namespace}/configmaps/${source.name}`,
          )
        ).data ?? {};
    } catch (err) {
      if (err instanceof KubeApiError && err.statusCode === 404) {
        if (source.optional) return;
        throw new Error(`configmap "${source.name}" not found`);
      }
      throw err;
    }
    const items = source.items ?? Object.keys(data).map((key) => ({ key, path: key }));
    for (const { key, path } of items) {
      if (!(key in data)) {
        if (source.optional) continue;
        throw new Error(`configmap "${source.name}" has no key "${key}"`);
      }
      put(dir, path, data[key]!);
    }
  }

  private async token(
    dir: string,
    source: { audience?: string; expirationSeconds?: number; path: string },
  ): Promise<void> {
    const { namespace, name, uid } = this.pod.metadata;
    const sa = this.pod.spec.serviceAccountName ?? "default";
    const seconds = Math.max(source.expirationSeconds ?? DEFAULT_TOKEN_SECONDS, MIN_TOKEN_SECONDS);
    const review = await this.client.create<{ status: { token: string } }>(
      `/api/v1/namespaces/${namespace}/serviceaccounts/${sa}/token`,
      {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenRequest",
        spec: {
          ...(source.audience ? { audiences: [source.audience] } : {}),
          expirationSeconds: seconds,
          ...(this.pod.spec.serviceAccountName
            ? { boundObjectRef: { apiVersion: "v1", kind: "Pod", name, uid } }
            : {}),
        },
      },
    );
    put(dir, source.path, review.status.token);
    const renew = (): void =>
      void this.token(dir, source).catch((err: unknown) => {
        this.log("projected token renewal failed; retrying in 5 s", { pod: name, err: String(err) });
        this.timers.push(setTimeout(renew, 5000));
      });
    this.timers.push(setTimeout(renew, seconds * 800));
  }
}

/** Writes `content` at `path` under `dir` at once (a rename), readable by the container's user. */
function put(dir: string, path: string, content: string): void {
  const file = join(dir, normalize(path));
  if (!file.startsWith(`${dir}/`)) throw new Error(`path "${path}" leaves the volume`);
  mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
  const tmp = join(dirname(file), `.${Date.now()}.tmp`);
  writeFileSync(tmp, content, { mode: 0o644 });
  renameSync(tmp, file);
}
