/**
 * One pod on a node-agent Node, run the way a kubelet runs it: a sandbox (network
 * namespace with the pod's IP), the ServiceAccount token, CA and namespace at the
 * in-cluster path (a bound token from the TokenRequest API, refreshed), each container
 * as a local process of a known image (see images.ts) in its own mount and UTS namespace
 * as the container's user, with the environment a kubelet gives it (pod-env.ts).
 *
 * Probes run as written (startup, then liveness and readiness); `restartPolicy` with the
 * kubelet's back-off (10 s doubling to 5 min, reset after 10 min running); deletion sends
 * SIGTERM, then SIGKILL after the grace period, then removes the pod object. Status is
 * written with strategic merge patches, as the kubelet's status manager does.
 *
 * (Test rig only, and long: a pod's lifecycle — sandbox, token, start, probes, restarts,
 * termination, status — is one state machine over the containers' shared state, read top
 * to bottom; what needs none of that state is in pod-spec.ts and pod-env.ts.)
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { KubeClient } from "../../../src/k8s/client.js";
import { KubeApiError } from "../../../src/k8s/client.js";
import { containerArgv } from "./container.js";
import type { ImageTable } from "./images.js";
import type { PodNetwork } from "./network.js";
import { containerEnvironment, expand } from "./pod-env.js";
import type { ContainerSpec, Pod, SecurityContext } from "./pod-spec.js";
import { type Probe, probeTiming, runProbe } from "./probes.js";
import { PodVolumes } from "./volumes.js";

export type { Pod } from "./pod-spec.js";

/** What a pod needs from its agent. */
export interface PodContext {
  client: KubeClient;
  network: PodNetwork;
  images: ImageTable;
  /** Where pod directories (token files, container logs) are made. */
  podsDir: string;
  /** The cluster CA, written as the pod's `ca.crt`. */
  caFile: string;
  /** `KUBERNETES_SERVICE_HOST` / `_PORT`: the `kubernetes` Service's ClusterIP and port. */
  kubernetesService: { host: string; port: number };
  nodeName: string;
  hostIP: string;
  /** A free IP of the node's /24: `preferred` when it is one (a pod keeps its IP across agent restarts). */
  allocateIP: (preferred?: string) => string;
  releaseIP: (ip: string) => void;
  /** Restart back-off. @default 10 s doubling to 300 s */
  backoff: { initialMs: number; maxMs: number };
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

type ContainerState =
  | { waiting: { reason: string; message?: string } }
  | { running: { startedAt: string } }
  | {
      terminated: {
        exitCode: number;
        signal?: number;
        reason: string;
        startedAt: string;
        finishedAt: string;
      };
    };

const RESET_BACKOFF_AFTER_MS = 10 * 60_000;
const TOKEN_SECONDS = 3607;
const SIGNALS: Record<string, number> = {
  SIGTERM: 15,
  SIGKILL: 9,
  SIGINT: 2,
  SIGHUP: 1,
  SIGABRT: 6,
  SIGSEGV: 11,
};

const now = () => new Date().toISOString().replace(/\.\d+Z$/, "Z");

const NO_STATE = { waiting: null, running: null, terminated: null };

class Container {
  restartCount = 0;
  state: ContainerState = { waiting: { reason: "ContainerCreating" } };
  lastState: ContainerState | Record<string, never> = {};
  ready = false;
  started = false;
  proc?: ChildProcess;
  startedAtMs = 0;
  quickRestarts = 0;
  restartTimer?: NodeJS.Timeout;
  /** A restart is scheduled (back-off). */
  restartPending = false;
  probeTimers: NodeJS.Timeout[] = [];
  killTimer?: NodeJS.Timeout;
  /** Why the agent is stopping this process (liveness, startup, deletion), for its status. */
  killReason?: string;

  constructor(readonly spec: ContainerSpec) {}

  clearProbes() {
    for (const t of this.probeTimers) clearTimeout(t);
    this.probeTimers = [];
  }
}

/** See the module comment. */
export class PodRunner {
  private pod: Pod;
  private readonly containers: Container[];
  private readonly sandboxId: string;
  private readonly dir: string;
  private ip?: string;
  private sandboxReady = false;
  private terminating = false;
  private gone = false;
  private lost = false;
  private startTime?: string;
  private tokenTimer?: NodeJS.Timeout;
  private readonly volumes: PodVolumes;
  private volumeRetry?: NodeJS.Timeout;
  private readonly transitions = new Map<string, { status: string; time: string }>();
  private dirty = false;
  private flushing?: Promise<void>;
  private setup?: Promise<void>;
  private readonly done: Promise<void>;
  private finish!: () => void;

  constructor(
    private readonly ctx: PodContext,
    pod: Pod,
  ) {
    this.pod = pod;
    this.sandboxId = pod.metadata.uid.replace(/-/g, "").slice(0, 8);
    this.dir = join(ctx.podsDir, `${pod.metadata.namespace}_${pod.metadata.name}_${pod.metadata.uid}`);
    const previous = new Map((pod.status?.containerStatuses ?? []).map((s) => [s.name, s.restartCount ?? 0]));
    this.containers = pod.spec.containers.map((c) => {
      const container = new Container(c);
      container.restartCount = previous.get(c.name) ?? 0;
      return container;
    });
    this.volumes = new PodVolumes(ctx.client, pod, this.dir, ctx.log);
    this.done = new Promise((resolve) => (this.finish = resolve));
    this.setup = this.start().catch((err: unknown) =>
      this.ctx.log("pod setup failed", { pod: this.key, err: String(err) }),
    );
  }

  /** `namespace/name`. */
  get key(): string {
    return `${this.pod.metadata.namespace}/${this.pod.metadata.name}`;
  }

  /** Deleted, lost, or the agent is stopping: nothing more is started. */
  private get stopping(): boolean {
    return this.terminating || this.lost || this.gone;
  }

  /** The Node this pod runs on. */
  get nodeName(): string {
    return this.ctx.nodeName;
  }

  /** The pod's IP, once its sandbox exists. */
  get podIP(): string | undefined {
    return this.ip;
  }

  /** Resolves when the pod is finished with (deleted and cleaned up). */
  get finished(): Promise<void> {
    return this.done;
  }

  /** A newer version of the pod from the watch. */
  update(pod: Pod): void {
    if (pod.metadata.uid !== this.pod.metadata.uid) return;
    this.pod = pod;
    if (pod.metadata.deletionTimestamp && !this.terminating)
      void this.terminate(pod.metadata.deletionGracePeriodSeconds);
    else if (!this.sandboxReady && !this.terminating && !this.setup)
      this.setup = this.start().catch(() => undefined);
  }

  /** The pod object is gone from the apiserver (force-deleted): stop at once. */
  async removed(): Promise<void> {
    this.gone = true;
    await this.terminate(0);
  }

  /** The node is lost: every process dies at once and the pod is cut off; nothing more is reported. */
  async lose(): Promise<void> {
    this.lost = true;
    // The link first: a lost machine sends nothing more, not even the FIN or RST its dying
    // processes' sockets would.
    if (this.sandboxReady)
      await this.ctx.network.setSandboxLink(this.sandboxId, false).catch(() => undefined);
    for (const c of this.containers) {
      clearTimeout(c.restartTimer);
      c.clearProbes();
      this.signal(c, "SIGKILL");
    }
  }

  /** The agent stops: containers get `graceMs` after SIGTERM; the sandbox is removed; the pod object is left. */
  async shutdown(graceMs: number): Promise<void> {
    this.gone = true;
    await this.stopContainers(graceMs);
    await this.teardown();
  }

  private async start(): Promise<void> {
    this.setup = undefined;
    const resolutions = await Promise.all(this.pod.spec.containers.map((c) => this.ctx.images.resolve(c)));
    if (this.stopping) return;
    const blocked = this.pod.spec.initContainers?.length
      ? {
          reason: "CreateContainerConfigError",
          message: "init containers are not supported by the governor node agent",
        }
      : undefined;
    let waiting = false;
    resolutions.forEach((r, i) => {
      const c = this.containers[i]!;
      if (blocked) c.state = { waiting: blocked };
      else if ("reason" in r) c.state = { waiting: { reason: r.reason, message: r.message } };
      else return;
      waiting = true;
    });
    if (waiting) {
      // Stays Pending, saying why; a changed image (pods' images are mutable) retries.
      this.markDirty();
      return;
    }
    // Volumes before the sandbox, as the kubelet mounts them: a missing ConfigMap keeps
    // the pod ContainerCreating, saying why, and is looked for again every 5 s.
    const unmounted = await this.volumes.setUp();
    if (this.stopping) return;
    if (unmounted) {
      for (const c of this.containers)
        c.state = { waiting: { reason: "ContainerCreating", message: unmounted } };
      this.markDirty();
      this.volumeRetry = setTimeout(() => {
        this.setup = this.start().catch(() => undefined);
      }, 5000);
      return;
    }
    this.ip = this.ctx.allocateIP(this.pod.status?.podIP);
    this.startTime = now();
    mkdirSync(join(this.dir, "serviceaccount"), { recursive: true, mode: 0o755 });
    await this.ctx.network.createSandbox(this.sandboxId, this.ip);
    this.sandboxReady = true;
    if (this.pod.spec.automountServiceAccountToken !== false) await this.refreshToken();
    this.markDirty();
    for (const c of this.containers) await this.run(c);
  }

  private async refreshToken(): Promise<void> {
    if (this.stopping) return;
    const { namespace, name, uid } = this.pod.metadata;
    const sa = this.pod.spec.serviceAccountName ?? "default";
    try {
      const review = await this.ctx.client.create<{ status: { token: string } }>(
        `/api/v1/namespaces/${namespace}/serviceaccounts/${sa}/token`,
        {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: {
            expirationSeconds: TOKEN_SECONDS,
            // Bound to the pod, as the kubelet's projected token is. A pod without
            // serviceAccountName (this control plane runs without the ServiceAccount admission
            // plugin) cannot be bound: it gets an unbound token of `default`.
            ...(this.pod.spec.serviceAccountName
              ? { boundObjectRef: { apiVersion: "v1", kind: "Pod", name, uid } }
              : {}),
          },
        },
      );
      const dir = join(this.dir, "serviceaccount");
      const put = (file: string, content: string | Buffer) => {
        writeFileSync(join(dir, `.${file}.tmp`), content, { mode: 0o644 });
        renameSync(join(dir, `.${file}.tmp`), join(dir, file));
      };
      put("token", review.status.token);
      put("ca.crt", readFileSync(this.ctx.caFile));
      put("namespace", namespace);
      this.tokenTimer = setTimeout(() => void this.refreshToken(), TOKEN_SECONDS * 800);
    } catch (err) {
      this.ctx.log("token request failed; retrying in 5 s", { pod: this.key, err: String(err) });
      this.tokenTimer = setTimeout(() => void this.refreshToken(), 5000);
    }
  }

  private securityOf(c: ContainerSpec): SecurityContext {
    return { ...this.pod.spec.securityContext, ...c.securityContext };
  }

  private async run(c: Container): Promise<void> {
    if (this.stopping) return;
    const resolved = await this.ctx.images.resolve(c.spec);
    if (this.stopping) return;
    if ("reason" in resolved) {
      c.state = { waiting: { reason: resolved.reason, message: resolved.message } };
      this.markDirty();
      return;
    }
    const sc = this.securityOf(c.spec);
    const uid = sc.runAsUser ?? resolved.user.uid;
    const gid = sc.runAsGroup ?? resolved.user.gid;
    let env: Record<string, string>;
    try {
      if (sc.runAsNonRoot && uid === 0)
        throw new Error("container has runAsNonRoot and image will run as root");
      env = await containerEnvironment(this.ctx, this.pod, this.ip, c.spec);
    } catch (err) {
      c.state = { waiting: { reason: "CreateContainerConfigError", message: (err as Error).message } };
      this.markDirty();
      return;
    }
    const argv = resolved.argv.map((a) => expand(a, env));
    const logFd = openSync(join(this.dir, `${c.spec.name}.log`), "a");
    const saDir =
      this.pod.spec.automountServiceAccountToken === false ? "-" : join(this.dir, "serviceaccount");
    const mounts = this.volumes.mountsOf(c.spec);
    if (typeof mounts === "string") {
      c.state = { waiting: { reason: "CreateContainerConfigError", message: mounts } };
      this.markDirty();
      return;
    }
    const proc = spawn(
      "ip",
      [
        "netns",
        "exec",
        this.ctx.network.netnsName(this.sandboxId),
        ...containerArgv({
          layout: resolved.layout,
          node: resolved.node,
          serviceAccountDir: saDir,
          hostname: this.pod.metadata.name.slice(0, 63),
          readOnlyRootFilesystem: sc.readOnlyRootFilesystem === true,
          uid,
          gid,
          noNewPrivileges: sc.allowPrivilegeEscalation === false,
          mounts,
          argv,
        }),
      ],
      { env, stdio: ["ignore", logFd, logFd], detached: true },
    );
    closeSync(logFd);
    c.proc = proc;
    c.startedAtMs = Date.now();
    c.killReason = undefined;
    const startedAt = now();
    c.state = { running: { startedAt } };
    c.ready = false;
    c.started = !c.spec.startupProbe;
    this.markDirty();
    this.ctx.log("container started", { pod: this.key, container: c.spec.name, pid: proc.pid });
    proc.once("exit", (code, signal) => this.exited(c, startedAt, code, signal));
    proc.once("error", (err) =>
      this.ctx.log("container could not start", { pod: this.key, err: err.message }),
    );
    this.startProbes(c, proc);
  }

  private exited(c: Container, startedAt: string, code: number | null, signal: NodeJS.Signals | null): void {
    clearTimeout(c.killTimer);
    c.clearProbes();
    c.proc = undefined;
    c.ready = false;
    const exitCode = code ?? 128 + (signal ? (SIGNALS[signal] ?? 0) : 0);
    const reason = c.killReason ?? (exitCode === 0 ? "Completed" : "Error");
    c.state = {
      terminated: {
        exitCode,
        ...(signal ? { signal: SIGNALS[signal] } : {}),
        reason,
        startedAt,
        finishedAt: now(),
      },
    };
    this.ctx.log("container exited", { pod: this.key, container: c.spec.name, exitCode, reason });
    if (this.stopping) {
      this.markDirty();
      return;
    }
    const policy = this.pod.spec.restartPolicy ?? "Always";
    if (policy === "Never" || (policy === "OnFailure" && exitCode === 0)) {
      this.markDirty();
      return;
    }
    if (Date.now() - c.startedAtMs >= RESET_BACKOFF_AFTER_MS) c.quickRestarts = 0;
    const delay =
      c.quickRestarts === 0
        ? 0
        : Math.min(this.ctx.backoff.maxMs, this.ctx.backoff.initialMs * 2 ** (c.quickRestarts - 1));
    c.quickRestarts++;
    c.lastState = c.state;
    if (delay > 0)
      c.state = {
        waiting: {
          reason: "CrashLoopBackOff",
          message: `back-off ${Math.round(delay / 1000)}s restarting failed container=${c.spec.name} pod=${this.pod.metadata.name}`,
        },
      };
    this.markDirty();
    c.restartPending = true;
    c.restartTimer = setTimeout(() => {
      c.restartPending = false;
      c.restartCount++;
      void this.run(c);
    }, delay);
  }

  private startProbes(c: Container, proc: ChildProcess): void {
    const target = {
      podIP: this.ip!,
      netns: this.ctx.network.netnsName(this.sandboxId),
      ports: c.spec.ports ?? [],
    };
    const alive = () => c.proc === proc && !this.stopping;
    const loop = (
      kind: "startup" | "liveness" | "readiness",
      probe: Probe,
      onResult: (ok: boolean, message: string, streak: number) => boolean,
    ) => {
      const t = probeTiming(probe);
      let streak = 0;
      let last: boolean | undefined;
      const tick = async () => {
        if (!alive()) return;
        if (kind !== "startup" && !c.started) {
          c.probeTimers.push(setTimeout(() => void tick(), 500));
          return;
        }
        const result = await runProbe(probe, target);
        if (!alive()) return;
        streak = result.ok === last ? streak + 1 : 1;
        last = result.ok;
        if (onResult(result.ok, result.message, streak))
          c.probeTimers.push(setTimeout(() => void tick(), t.periodMs));
      };
      c.probeTimers.push(setTimeout(() => void tick(), t.initialDelayMs));
    };
    if (c.spec.startupProbe) {
      const t = probeTiming(c.spec.startupProbe);
      loop("startup", c.spec.startupProbe, (ok, message, streak) => {
        if (ok && streak >= t.successThreshold) {
          c.started = true;
          if (!c.spec.readinessProbe) c.ready = true;
          this.markDirty();
          return false;
        }
        if (!ok && streak >= t.failureThreshold) {
          this.kill(
            c,
            "StartupProbeFailed",
            `Startup probe failed: ${message}`,
            c.spec.startupProbe?.terminationGracePeriodSeconds,
          );
          return false;
        }
        return true;
      });
    }
    if (c.spec.livenessProbe) {
      const t = probeTiming(c.spec.livenessProbe);
      loop("liveness", c.spec.livenessProbe, (ok, message, streak) => {
        if (!ok && streak >= t.failureThreshold) {
          this.kill(
            c,
            "Unhealthy",
            `Liveness probe failed: ${message}`,
            c.spec.livenessProbe?.terminationGracePeriodSeconds,
          );
          return false;
        }
        return true;
      });
    }
    if (c.spec.readinessProbe) {
      const t = probeTiming(c.spec.readinessProbe);
      loop("readiness", c.spec.readinessProbe, (ok, _message, streak) => {
        const next = ok
          ? streak >= t.successThreshold
            ? true
            : c.ready
          : streak >= t.failureThreshold
            ? false
            : c.ready;
        if (next !== c.ready) {
          c.ready = next;
          this.markDirty();
        }
        return true;
      });
    } else if (c.started) {
      // Ready as it starts, as the kubelet has a container without a readiness probe.
      c.ready = true;
      this.markDirty();
    }
  }

  /** Stops a container for a probe: SIGTERM, then SIGKILL after its grace period; restart follows the policy. */
  private kill(c: Container, reason: string, message: string, graceSeconds?: number): void {
    this.ctx.log("killing container", { pod: this.key, container: c.spec.name, reason: message });
    void this.event(reason, message, "Warning");
    c.killReason = reason === "Unhealthy" ? "Error" : reason;
    const grace = (graceSeconds ?? this.pod.spec.terminationGracePeriodSeconds ?? 30) * 1000;
    this.signal(c, "SIGTERM");
    c.killTimer = setTimeout(() => this.signal(c, "SIGKILL"), grace);
  }

  private signal(c: Container, signal: NodeJS.Signals): void {
    const pid = c.proc?.pid;
    if (!pid) return;
    try {
      process.kill(-pid, signal); // its process group (detached)
    } catch {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
  }

  private async stopContainers(graceMs: number): Promise<void> {
    const running = this.containers.filter((c) => c.proc);
    for (const c of this.containers) {
      clearTimeout(c.restartTimer);
      c.restartPending = false;
      c.clearProbes();
    }
    await Promise.all(
      running.map(
        (c) =>
          new Promise<void>((resolve) => {
            const proc = c.proc!;
            if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
            proc.once("exit", () => resolve());
            this.signal(c, graceMs > 0 ? "SIGTERM" : "SIGKILL");
            if (graceMs > 0) c.killTimer = setTimeout(() => this.signal(c, "SIGKILL"), graceMs);
          }),
      ),
    );
  }

  /** Deletion: containers stop within the grace period; then the pod object is removed. */
  private async terminate(graceSeconds?: number): Promise<void> {
    if (this.terminating) return;
    this.terminating = true;
    await this.setup;
    const grace = graceSeconds ?? this.pod.spec.terminationGracePeriodSeconds ?? 30;
    this.ctx.log("terminating pod", { pod: this.key, graceSeconds: grace });
    await this.stopContainers(grace * 1000);
    this.markDirty();
    await this.flushing;
    await this.teardown();
    if (!this.gone) {
      try {
        await this.ctx.client.request(
          "DELETE",
          `/api/v1/namespaces/${this.pod.metadata.namespace}/pods/${this.pod.metadata.name}`,
          {
            body: {
              apiVersion: "v1",
              kind: "DeleteOptions",
              gracePeriodSeconds: 0,
              preconditions: { uid: this.pod.metadata.uid },
            },
          },
        );
      } catch (err) {
        if (!(err instanceof KubeApiError && (err.statusCode === 404 || err.statusCode === 409))) throw err;
      }
    }
    this.finish();
  }

  private async teardown(): Promise<void> {
    clearTimeout(this.tokenTimer);
    clearTimeout(this.volumeRetry);
    this.volumes.remove();
    if (this.sandboxReady) await this.ctx.network.deleteSandbox(this.sandboxId);
    this.sandboxReady = false;
    if (this.ip) this.ctx.releaseIP(this.ip);
    this.ip = undefined;
    rmSync(join(this.dir, "serviceaccount"), { recursive: true, force: true });
  }

  private condition(type: string, ok: boolean) {
    const status = ok ? "True" : "False";
    const prev = this.transitions.get(type);
    if (!prev || prev.status !== status) this.transitions.set(type, { status, time: now() });
    return { type, status, lastProbeTime: null, lastTransitionTime: this.transitions.get(type)!.time };
  }

  private status() {
    const cs = this.containers;
    const everRan = (c: Container) => !("waiting" in c.state) || Object.keys(c.lastState).length > 0;
    let phase = "Pending";
    if (this.sandboxReady && cs.every((c) => "terminated" in c.state && !c.restartPending))
      phase = cs.every((c) => "terminated" in c.state && c.state.terminated.exitCode === 0)
        ? "Succeeded"
        : "Failed";
    else if (this.sandboxReady && cs.some(everRan)) phase = "Running";
    const allReady = this.sandboxReady && cs.every((c) => c.ready) && !this.terminating;
    return {
      phase,
      hostIP: this.ctx.hostIP,
      hostIPs: [{ ip: this.ctx.hostIP }],
      ...(this.ip ? { podIP: this.ip, podIPs: [{ ip: this.ip }] } : {}),
      ...(this.startTime ? { startTime: this.startTime } : {}),
      conditions: [
        this.condition("PodReadyToStartContainers", this.sandboxReady),
        this.condition("Initialized", true),
        this.condition("ContainersReady", allReady),
        this.condition("Ready", allReady),
      ],
      containerStatuses: cs.map((c) => ({
        name: c.spec.name,
        image: c.spec.image ?? "",
        imageID: `governor-node-agent://${c.spec.image ?? ""}`,
        ...(c.proc?.pid ? { containerID: `governor://${c.proc.pid}` } : {}),
        ready: c.ready,
        started: "running" in c.state && c.started,
        restartCount: c.restartCount,
        // A strategic merge patch merges maps: the states not current are sent as null, or an
        // old `waiting` would stay beside the new `running`.
        state: { ...NO_STATE, ...c.state },
        lastState: { ...NO_STATE, ...c.lastState },
      })),
    };
  }

  private markDirty(): void {
    if (this.lost || this.gone) return;
    this.dirty = true;
    this.flushing ??= this.flush().finally(() => (this.flushing = undefined));
  }

  private async flush(): Promise<void> {
    while (this.dirty && !this.lost && !this.gone) {
      this.dirty = false;
      const { namespace, name } = this.pod.metadata;
      try {
        await this.ctx.client.request("PATCH", `/api/v1/namespaces/${namespace}/pods/${name}/status`, {
          body: { metadata: { uid: this.pod.metadata.uid }, status: this.status() },
          contentType: "application/strategic-merge-patch+json",
        });
      } catch (err) {
        if (err instanceof KubeApiError && err.statusCode === 404) {
          if (!this.terminating) void this.removed();
          return;
        }
        const permanent =
          err instanceof KubeApiError &&
          err.statusCode >= 400 &&
          err.statusCode < 500 &&
          err.statusCode !== 429;
        this.ctx.log(permanent ? "status update refused" : "status update failed; retrying", {
          pod: this.key,
          err: String(err),
        });
        if (permanent) return; // the next change writes the whole status again
        this.dirty = true;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  private async event(reason: string, message: string, type: "Normal" | "Warning"): Promise<void> {
    const { namespace, name, uid } = this.pod.metadata;
    const ts = now();
    await this.ctx.client
      .create(`/api/v1/namespaces/${namespace}/events`, {
        apiVersion: "v1",
        kind: "Event",
        metadata: { generateName: `${name}.`, namespace },
        involvedObject: { apiVersion: "v1", kind: "Pod", name, namespace, uid },
        reason,
        message,
        type,
        source: { component: "kubelet", host: this.ctx.nodeName },
        firstTimestamp: ts,
        lastTimestamp: ts,
        count: 1,
      })
      .catch(() => undefined);
  }
}
