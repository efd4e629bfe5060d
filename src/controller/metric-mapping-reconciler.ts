/**
 * The MetricMapping reconciler. For each mapping: validate what the CRD schema cannot
 * (the subject resource exists and is namespaced), pick the winner among mappings
 * claiming the same (namespace, subject, metric) — the oldest — and
 * make the {@link MappingProvider} serve it with a running sampler; write `status`
 * (conditions Ready, SourceHealthy and ShadowsUpstream, value, objects, lastSampleTime) and Events on
 * transitions. Every replica serves; the status it computes is written by its
 * {@link MappingStatusWriter}, which runs on the leader only.
 *
 * Layout: the claim index in claims.ts, the runtime builder in mapping-runtime.ts, status
 * in mapping-status.ts and its writer in mapping-status-writer.ts.
 */
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { Condition } from "../api/common.js";
import { specProblems } from "../api/common.js";
import { MetricMappingSpec, type MetricMappingObject } from "../sources/registry.js";
import type { SharedInformer } from "../k8s/informer-cache.js";
import type { ActiveMapping, MappingProvider } from "../metrics/mapping-provider.js";
import type { MappingReader, ServedMapping } from "../sources/kind.js";
import { SourceConfigError } from "../sources/source.js";
import { boundedText } from "../util/bounded-text.js";
import { ClaimIndex, oldest, resolveClaim } from "./claims.js";
import { findCondition, type ConditionUpdate } from "./conditions.js";
import { type Controller, objectKey, splitKey, startController } from "./controller.js";
import type { EventRecorder } from "./events.js";
import { type RuntimeDeps, type RuntimeMapping, buildActiveMapping } from "./mapping-runtime.js";
import { SamplerPool } from "../metrics/sampler-pool.js";
import { computeStatus, statusFingerprint } from "./mapping-status.js";
import { MappingStatusWriter, type MappingStatusWriterOptions } from "./mapping-status-writer.js";
import type { ReconcileResult } from "./work-queue.js";

/** Options of {@link MetricMappingReconciler}; the {@link RuntimeDeps} build each mapping's sources and samplers. */
export interface MetricMappingReconcilerOptions
  extends RuntimeDeps, Omit<MappingStatusWriterOptions, "client" | "events"> {
  /** The MetricMappings (the manager's shared informer over METRIC_MAPPINGS_PATH). */
  informer: SharedInformer<MetricMappingObject>;
  provider: MappingProvider;
  events: EventRecorder;
  logger: Logger;
  /** Reconcile durations and failures, for /metrics. */
  observeReconcile?: (controller: string, seconds: number, failed: boolean) => void;
  /**
   * Whether the upstream adapter Governor forwards to serves a served mapping's metric too:
   * what its `ShadowsUpstream` condition says, or undefined. Call {@link MetricMappingReconciler.resyncAll}
   * when the answer may have changed.
   */
  shadowed?: (m: ActiveMapping) => string | undefined;
}

/**
 * Whether a stored MetricMapping differs from what the last reconcile of its key read, in
 * what a reconcile reads besides status: which object it is (a mapping deleted and made
 * again between two watches comes back as an update), its spec's generation, its deletion.
 */
const isNewTo = (r: MappingRecord | undefined, m: MetricMappingObject) =>
  !r ||
  r.uid !== m.metadata?.uid ||
  r.generation !== m.metadata?.generation ||
  r.deleting !== Boolean(m.metadata?.deletionTimestamp);

/** Told what changes about MetricMappings (the ScalableWorkload controller is). */
export interface MappingListener {
  /**
   * A mapping of `namespace` may have changed its spec, or whether it can serve at all (see
   * {@link MetricMappingReconciler.problem}): HPAs built from mappings follow.
   */
  mappingChanged(namespace: string): void;
  /** A mapping's sampler made an attempt (ScalableWorkloads that scale to zero read it). */
  activationSampled(namespace: string, name: string): void;
}

interface Running {
  hash: string;
  active: RuntimeMapping;
}

/** What reading a spec gives. */
type SpecParse = ReturnType<typeof MetricMappingSpec.safeParse>;

/**
 * What the reconciler keeps of one mapping, in one record (one Map entry, not five: each
 * entry of a Map costs about 50 bytes, and 100,000 mappings have one in each).
 */
interface MappingRecord {
  /** What the last reconcile read ({@link isNewTo}); listeners hear of each new generation. */
  uid?: string;
  generation?: number;
  deleting?: boolean;
  /** The spec last parsed, by the object's uid and generation (a status write changes neither). */
  parsed?: {
    uid: string;
    generation: number;
    /** The spec as read, or why it could not be (not the parser's result: one object less a mapping). */
    spec?: MetricMappingSpec;
    error?: Extract<SpecParse, { success: false }>["error"];
    hash: string;
  };
  running?: Running;
  /** The Ready and SourceHealthy states last logged (strings of the conditions, not copies). */
  readyStatus?: string;
  readyReason?: string;
  healthStatus?: string;
  healthReason?: string;
}

/**
 * `Ready` reasons that mean a mapping can never serve as written, until someone edits it
 * (a source that fails or a conflict are passing states: the HPA holds meanwhile).
 */
const CONFIGURATION_PROBLEMS = new Set([
  "InvalidSpec",
  "InvalidSource",
  "UnknownResource",
  "ClusterScopedSubject",
]);

/**
 * Reconciles in flight. They mostly wait on status writes: more in flight loads 10,000
 * mappings (a restart, a failover) several times faster. The apiserver's flow control bounds it.
 */
const CONCURRENCY = 16;

/** The longest a reconcile waits for a new sampler's first attempt (see firstAttempt). */
const FIRST_SAMPLE_WAIT_MS = 1000;

/** See the module comment. */
export class MetricMappingReconciler implements MappingReader {
  private controller?: Controller<MetricMappingObject>;
  private readonly records = new Map<string, MappingRecord>();
  private readonly log: Logger;
  private readonly listeners: MappingListener[] = [];
  /** Writes the status this reconciler computes: add it to the manager (it needs leadership). */
  readonly statusWriter: MappingStatusWriter;

  /** What mappings' runtimes are built with: the options, and one pool of shared samplers. */
  private readonly runtime: RuntimeDeps;

  constructor(private readonly opts: MetricMappingReconcilerOptions) {
    this.runtime = { ...opts, samplers: opts.samplers ?? new SamplerPool(), mappings: this };
    this.log = opts.logger.child({ controller: "metricmapping" });
    this.statusWriter = new MappingStatusWriter({ ...opts, client: opts.client, events: opts.events }, () =>
      this.resyncAll(),
    );
  }

  /** Tells `listener` of every change from now on. */
  subscribe(listener: MappingListener): void {
    this.listeners.push(listener);
  }

  /** Starts reconciling MetricMappings. */
  start(): Controller<MetricMappingObject> {
    this.controller = startController<MetricMappingObject>({
      concurrency: CONCURRENCY,
      name: "metricmapping",
      informer: this.opts.informer,
      reconcile: (key) => this.reconcile(key),
      logger: this.opts.logger,
      observeReconcile: this.opts.observeReconcile,
      // The echo of a status write (its own, or the leader's) changes nothing the reconcile reads.
      isNews: (m) => isNewTo(this.records.get(objectKey(m)), m),
    });
    return this.controller;
  }

  /** Stops watching and every sampler. */
  async stop(): Promise<void> {
    await this.controller?.stop();
    for (const [key, r] of this.records) {
      if (!r.running) continue;
      this.opts.provider.deactivate(key);
      await r.running.active.release();
      r.running = undefined;
    }
  }

  /** How many MetricMappings of the first list have been reconciled, of how many (see Controller). */
  initialProgress(): { done: number; total: number } | undefined {
    return this.controller?.initialProgress();
  }

  /** Re-runs every mapping (e.g. after becoming leader, to write status). */
  resyncAll(): void {
    for (const m of this.controller?.informer.list() ?? []) this.controller?.queue.add(objectKey(m));
  }

  /** A MetricMapping from the cache. */
  get(namespace: string, name: string): MetricMappingObject | undefined {
    return this.controller?.informer.get(name, namespace);
  }

  /** Why a mapping can never serve as written (see CONFIGURATION_PROBLEMS), if it cannot. */
  problem(namespace: string, name: string): { reason: string; message: string } | undefined {
    return this.problems.get(`${namespace}/${name}`);
  }

  private readonly problems = new Map<string, { reason: string; message: string }>();

  /** A mapping this replica serves (a formula's input), or why it serves none by that name. */
  read(namespace: string, name: string): ServedMapping | string {
    const key = `${namespace}/${name}`;
    const active = this.records.get(key)?.running?.active;
    if (active) return active;
    const obj = this.controller?.informer.get(name, namespace);
    if (!obj) return "does not exist";
    const ready = this.problems.get(key) ?? findCondition(obj.status?.conditions, "Ready");
    return ready
      ? `is not served (${ready.reason}): ${boundedText(ready.message, 300)}`
      : "is not served yet";
  }

  /** Records whether `key` has a configuration problem; a change is news for HPAs. */
  private noteProblem(
    key: string,
    namespace: string,
    ready: Omit<ConditionUpdate, "type"> | undefined,
  ): void {
    const next =
      ready && CONFIGURATION_PROBLEMS.has(ready.reason)
        ? { reason: ready.reason, message: ready.message }
        : undefined;
    const previous = this.problems.get(key);
    if (previous?.reason === next?.reason && previous?.message === next?.message) return;
    if (next) this.problems.set(key, next);
    else this.problems.delete(key);
    for (const l of this.listeners) l.mappingChanged(namespace);
  }

  /**
   * Logs a mapping's Ready and SourceHealthy transitions, once each (every replica logs
   * what it sees; only the leader writes status): warn for what needs a look, info when
   * it serves again.
   */
  private logTransitions(key: string, conditions: readonly Condition[]): void {
    const seen = this.record(key);
    const ready = findCondition(conditions, "Ready");
    const health = findCondition(conditions, "SourceHealthy");
    if (ready && (ready.status !== seen.readyStatus || ready.reason !== seen.readyReason)) {
      const fields = { mapping: key, reason: ready.reason };
      if (ready.status === "True" && ready.reason === "Serving") this.log.info(fields, ready.message);
      else if (ready.status === "Unknown") this.log.debug(fields, ready.message);
      else this.log.warn(fields, ready.message);
    }
    if (health && (health.status !== seen.healthStatus || health.reason !== seen.healthReason)) {
      const fields = { mapping: key, reason: health.reason };
      if (health.status === "False") this.log.warn(fields, `source failing: ${health.message}`);
      else if (health.status === "True" && seen.healthStatus === "False")
        this.log.info(fields, "source recovered: the last sample succeeded");
    }
    seen.readyStatus = ready?.status;
    seen.readyReason = ready?.reason;
    seen.healthStatus = health?.status;
    seen.healthReason = health?.reason;
  }

  private readonly claims = new ClaimIndex();

  /** The record of `key`, made if it has none. */
  private record(key: string): MappingRecord {
    let r = this.records.get(key);
    if (!r) this.records.set(key, (r = {}));
    return r;
  }

  private async reconcile(key: string): Promise<ReconcileResult | void> {
    const { namespace, name } = splitKey(key);
    const obj = this.controller!.informer.get(name, namespace);
    if (!obj) {
      for (const l of this.listeners) l.mappingChanged(namespace);
      await this.retire(key);
      this.records.delete(key);
      this.setClaim(key, namespace, undefined);
      this.noteProblem(key, namespace, undefined);
      this.statusWriter.forget(key);
      return;
    }
    const record = this.record(key);
    // Another object of the same name (made again between two watches) is news as a new generation is.
    const changed =
      record.generation !== obj.metadata?.generation ||
      (record.uid !== undefined && record.uid !== obj.metadata?.uid);
    record.uid = obj.metadata?.uid;
    record.deleting = Boolean(obj.metadata?.deletionTimestamp);
    record.generation = obj.metadata?.generation;
    if (changed) for (const l of this.listeners) l.mappingChanged(namespace);
    if (obj.metadata?.deletionTimestamp) {
      await this.retire(key);
      this.setClaim(key, namespace, undefined);
      this.noteProblem(key, namespace, undefined);
      record.parsed = undefined;
      record.readyStatus = record.readyReason = record.healthStatus = record.healthReason = undefined;
      this.statusWriter.forget(key);
      return;
    }
    const parsed = this.parse(record, obj);
    if (!parsed.success) {
      await this.retire(key);
      this.setClaim(key, namespace, undefined);
      const message = specProblems(parsed.error);
      return this.writeStatus(obj, { ready: { status: "False", reason: "InvalidSpec", message } });
    }
    const spec = parsed.data;
    const claim = await resolveClaim(this.opts.mapper, spec);
    if ("problem" in claim) {
      await this.retire(key);
      this.setClaim(key, namespace, undefined);
      return this.writeStatus(
        obj,
        { ready: { status: "False", reason: claim.reason, message: claim.problem }, spec },
        claim.retryMs,
      );
    }
    this.setClaim(key, namespace, claim.id);
    const winner = oldest(
      this.claims
        .claiming(namespace, claim.id)
        .map((k) => this.controller!.informer.get(splitKey(k).name, namespace)),
    );
    if (winner && objectKey(winner) !== key) {
      await this.retire(key);
      return this.writeStatus(obj, {
        spec,
        ready: {
          status: "False",
          reason: "Conflict",
          message: `metric "${spec.metric}" for ${claim.describe} is already served by MetricMapping ${winner.metadata?.name} (the older mapping wins)`,
        },
      });
    }

    const hash = parsed.hash;
    let running = record.running;
    if (!running || running.hash !== hash) {
      let active: RuntimeMapping;
      try {
        active = this.build(key, namespace, spec, claim.subject);
      } catch (err) {
        if (!(err instanceof SourceConfigError)) throw err;
        await this.retire(key);
        return this.writeStatus(
          obj,
          { spec, ready: { status: "False", reason: "InvalidSource", message: err.message } },
          err.retryAfterMs,
        );
      }
      const previous = running;
      running = { hash, active };
      record.running = running;
      this.opts.provider.activate(active);
      active.sampler.start();
      if (previous) await previous.active.release();
      this.log.debug({ mapping: key, metric: spec.metric }, "sampler started");
      await this.firstAttempt(key, active);
    }
    // Until its sampler's first attempt ends, a mapping's status would only say "waiting for
    // the first sample": not written, as that attempt's end queues the mapping again
    // (build()). Otherwise every start (a restart, a failover) flipped each Ready mapping to
    // Unknown and back — two status writes per mapping, 20,000 for 10,000 mappings.
    if (!running.active.sampler.state.attemptedAtMs) return {};
    return this.writeStatus(obj, { spec, active: running.active });
  }

  /**
   * The mapping's spec as the schema reads it, and a hash of it: parsed once per generation,
   * not once per reconcile (a sample that changes the value reconciles too).
   */
  private parse(record: MappingRecord, obj: MetricMappingObject): SpecParse & { hash: string } {
    const uid = obj.metadata?.uid;
    const generation = obj.metadata?.generation;
    let hit = record.parsed;
    if (!hit || hit.uid !== uid || hit.generation !== generation) {
      const result = MetricMappingSpec.safeParse(obj.spec);
      const hash = result.success
        ? createHash("sha256").update(JSON.stringify(result.data)).digest("base64url")
        : "";
      hit = result.success
        ? { uid: uid ?? "", generation: generation ?? -1, spec: result.data, hash }
        : { uid: uid ?? "", generation: generation ?? -1, error: result.error, hash };
      record.parsed = uid && generation !== undefined ? hit : undefined;
    }
    return hit.spec
      ? { success: true, data: hit.spec, hash: hit.hash }
      : { success: false, error: hit.error!, hash: "" };
  }

  /**
   * The mapping's runtime (mapping-runtime.ts). It is reconciled again after a
   * sample only when that changes what the status shows (value, health): 10,000 steady
   * mappings would otherwise reconcile ~700 times a second for nothing. Staleness is
   * time-driven and has its own requeue.
   */
  private build(
    key: string,
    namespace: string,
    spec: MetricMappingSpec,
    subject: ActiveMapping["subject"],
  ): RuntimeMapping {
    let shown: { health: string; value: string } | undefined;
    return buildActiveMapping(this.runtime, { key, namespace, spec, subject }, (state) => {
      for (const l of this.listeners) l.activationSampled(namespace, splitKey(key).name);
      const now = statusFingerprint(state);
      const same = now.health === shown?.health && now.value === shown.value;
      // A fresh sample of the same value still ends a Stale (or fallback) status.
      if (same && !(state.last && !state.error && this.showsStale(key))) return;
      const valueOnly = now.health === shown?.health;
      shown = now;
      // The reconcile waiting for this attempt writes what it shows.
      if (this.awaitingFirst.has(key)) return;
      if (!valueOnly || !this.serving(key)) return this.controller?.queue.add(key);
      // A new value of a serving mapping changes status only if the writer would write it:
      // reconcile when it could, not on every sample (nor at all where it would not).
      const inMs = this.statusWriter.valueWriteIn(key);
      if (inMs !== undefined) this.controller?.queue.addAfter(key, inMs);
    });
  }

  /**
   * Waits for a just-started sampler's first attempt, at most {@link FIRST_SAMPLE_WAIT_MS}
   * and only while no other mapping waits for a worker, so that the reconcile that started
   * it writes the first value: one reconcile from apply to Ready. The attempt's end does not
   * queue the mapping meanwhile (build()). A slow source, or a start of many mappings at
   * once (a restart, a failover), holds no worker: the attempt's end queues the mapping
   * as before.
   */
  private async firstAttempt(key: string, active: ActiveMapping): Promise<void> {
    // A sampler shared with another mapping may have sampled already.
    if (active.sampler.state.attemptedAtMs || (this.controller?.queue.length ?? 0) >= CONCURRENCY) return;
    this.awaitingFirst.add(key);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        active.sampler.sampleNow(),
        new Promise((resolve) => (timer = setTimeout(resolve, FIRST_SAMPLE_WAIT_MS))),
      ]);
    } finally {
      clearTimeout(timer);
      this.awaitingFirst.delete(key);
    }
  }

  /** Whether the status stored for `key` says it serves a current value (Ready, Serving). */
  private serving(key: string): boolean {
    const ready = this.storedReady(key);
    return ready?.status === "True" && ready.reason === "Serving";
  }

  /** Whether the status stored for `key` says its value is too old (Stale, or its fallback served). */
  private showsStale(key: string): boolean {
    const reason = this.storedReady(key)?.reason;
    return reason === "Stale" || reason === "ServingFallback";
  }

  private storedReady(key: string): Condition | undefined {
    const { namespace, name } = splitKey(key);
    return findCondition(this.controller?.informer.get(name, namespace)?.status?.conditions, "Ready");
  }

  /** Mappings whose reconcile waits for their sampler's first attempt ({@link firstAttempt}). */
  private readonly awaitingFirst = new Set<string>();

  private async retire(key: string): Promise<void> {
    const record = this.records.get(key);
    const r = record?.running;
    if (!r) return;
    record.running = undefined;
    this.opts.provider.deactivate(key);
    await r.active.release();
    this.log.info({ mapping: key }, "stopped serving the metric");
  }

  /** Records what `key` claims; the mappings that share its old or new claim are reconciled again. */
  private setClaim(key: string, namespace: string, id: string | undefined): void {
    for (const k of this.claims.set(key, namespace, id)) this.controller?.queue.add(k);
  }

  /** Computes and (as leader, when it changed) writes status; returns when to look again. */
  private async writeStatus(
    obj: MetricMappingObject,
    what: { spec?: MetricMappingSpec; active?: ActiveMapping; ready?: Omit<ConditionUpdate, "type"> },
    retryMs?: number,
  ): Promise<ReconcileResult> {
    const key = objectKey(obj);
    const old = obj.status ?? {};
    const now = Date.now();
    const computed = computeStatus(
      old,
      obj.metadata?.generation,
      {
        spec: what.spec,
        ready: what.ready,
        active: what.active && { ...what.active, state: what.active.sampler.state },
        shadows: what.active && this.opts.shadowed?.(what.active),
      },
      now,
    );
    const { status } = computed;
    const conditions = status.conditions ?? [];
    const requeue = computed.requeueAfterMs ?? retryMs;
    const later: ReconcileResult = requeue !== undefined ? { requeueAfterMs: requeue } : {};
    this.noteProblem(key, obj.metadata?.namespace ?? "", what.active ? undefined : what.ready);
    this.logTransitions(key, conditions);
    return this.statusWriter.offer(obj, status, later);
  }
}
