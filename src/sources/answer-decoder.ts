/**
 * Decodes sources' answers without letting one answer stall or kill the process. A
 * synchronous parse cannot be interrupted, so an answer's cost is bounded by where it runs:
 *
 * - small answers (at most `inlineBytes`) of the kinds with a linear decoder (Prometheus
 *   JSON, exposition text) are decoded on the event loop, where each takes a few
 *   milliseconds — until they have taken `inlineBudgetMs` in one turn of the loop (many
 *   answers can arrive together: sixteen pods of a scrape, at a moment their senders
 *   choose), after which the rest of that turn's go to the worker;
 * - larger ones, and every JSONPath (whose cost grows with the path as well as the
 *   answer), go to one worker thread with its own capped heap, one at a time, taken
 *   round-robin by tenant (a mapping's namespace). Past `budgetMs` the thread is
 *   terminated and the answer is an error; an answer whose decoding outgrows the thread's
 *   heap kills only the thread. Either way the next answer gets a new thread.
 *
 * What waits for the worker is bounded in bytes (`maxQueuedBytes`); the thread is stopped
 * after `idleMs` without work, so a cluster with only small answers never starts one.
 */
import { Worker } from "node:worker_threads";
import { type AnswerJob, type AnswerResults, decodeAnswer } from "./answers.js";

/** Options of {@link AnswerDecoder}. */
export interface AnswerDecoderOptions {
  /** Answers up to this many bytes are decoded on the event loop. @default 32768 (32 KiB) */
  inlineBytes?: number;
  /** The most time decoding may take on the event loop in one turn of it. @default 10 */
  inlineBudgetMs?: number;
  /** The most one answer may take to decode in the worker. @default 1000 */
  budgetMs?: number;
  /** The worker's heap (old generation), in MiB. @default 64 */
  heapMb?: number;
  /** The most bytes of answers waiting for the worker. @default 67108864 (64 MiB) */
  maxQueuedBytes?: number;
  /** The most of them one tenant's answers may be. @default a quarter of maxQueuedBytes */
  maxQueuedBytesPerTenant?: number;
  /** How long the worker is kept without work. @default 30000 */
  idleMs?: number;
}

interface Pending {
  id: number;
  tenant: string;
  job: AnswerJob;
  body: Uint8Array;
  resolve(result: unknown): void;
  reject(err: Error): void;
}

/** See the module comment. */
export class AnswerDecoder {
  private readonly inlineBytes: number;
  private readonly inlineBudgetMs: number;
  /** Time spent decoding on the loop in this turn of it (reset when the turn ends). */
  private inlineSpentMs = 0;
  private readonly budgetMs: number;
  private readonly heapMb: number;
  private readonly maxQueuedBytes: number;
  private readonly maxQueuedBytesPerTenant: number;
  private readonly idleMs: number;
  /** Waiting answers by tenant. */
  private readonly queues = new Map<string, Pending[]>();
  /** When each tenant was last served (a sequence number): the longest unserved goes next. */
  private readonly lastServed = new Map<string, number>();
  private served = 0;
  private queuedBytes = 0;
  private running?: { pending: Pending; timer: NodeJS.Timeout };
  private worker?: Worker;
  /**
   * A worker being terminated: the next starts only when it has exited, so at most one
   * thread's heap is ever held (a thread stuck in native code exits only when it returns).
   */
  private terminating?: Promise<unknown>;
  /** Whether the worker has loaded its code (the budget counts from then). */
  private ready = false;
  private idleTimer?: NodeJS.Timeout;
  private nextId = 0;
  private closed = false;

  constructor(opts: AnswerDecoderOptions = {}) {
    this.inlineBytes = opts.inlineBytes ?? 32 * 1024;
    this.inlineBudgetMs = opts.inlineBudgetMs ?? 10;
    this.budgetMs = opts.budgetMs ?? 1000;
    this.heapMb = opts.heapMb ?? 64;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 64 * 1024 * 1024;
    this.maxQueuedBytesPerTenant = opts.maxQueuedBytesPerTenant ?? this.maxQueuedBytes / 4;
    this.idleMs = opts.idleMs ?? 30_000;
  }

  /**
   * What `body` means for `job`. Rejects with a short message when the answer does not
   * decode, takes longer than the budget, outgrows the worker's heap, or when `signal`
   * aborts while it waits.
   */
  decode<K extends AnswerJob["kind"]>(
    body: Uint8Array,
    job: Extract<AnswerJob, { kind: K }>,
    opts: { tenant: string; signal?: AbortSignal },
  ): Promise<AnswerResults[K]> {
    if (
      body.byteLength <= this.inlineBytes &&
      job.kind !== "json-path" &&
      this.inlineSpentMs < this.inlineBudgetMs
    ) {
      if (this.inlineSpentMs === 0) setImmediate(() => (this.inlineSpentMs = 0));
      const started = performance.now();
      try {
        return Promise.resolve(decodeAnswer(body, job));
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new Error(String(err)));
      } finally {
        // At least a little, so the reset above is scheduled once per turn.
        this.inlineSpentMs += Math.max(performance.now() - started, 0.001);
      }
    }
    if (this.closed) return Promise.reject(new Error("the answer decoder is closed"));
    const tenantQueued = (this.queues.get(opts.tenant) ?? []).reduce((n, p) => n + p.body.byteLength, 0);
    if (tenantQueued + body.byteLength > this.maxQueuedBytesPerTenant)
      return Promise.reject(
        new Error(
          `this namespace's large answers waiting to be decoded reach ${Math.round(this.maxQueuedBytesPerTenant / 1048576)} MiB; this one is dropped`,
        ),
      );
    if (this.queuedBytes + body.byteLength > this.maxQueuedBytes)
      return Promise.reject(
        new Error(
          `too many large answers are waiting to be decoded (${Math.round(this.maxQueuedBytes / 1048576)} MiB); this one is dropped`,
        ),
      );
    return new Promise<AnswerResults[K]>((resolve, reject) => {
      const pending: Pending = {
        id: this.nextId++,
        tenant: opts.tenant,
        job,
        body,
        resolve: resolve,
        reject,
      };
      const queue = this.queues.get(opts.tenant);
      if (queue) queue.push(pending);
      else this.queues.set(opts.tenant, [pending]);
      this.queuedBytes += body.byteLength;
      opts.signal?.addEventListener(
        "abort",
        () => {
          if (this.dequeue(pending)) reject(new Error("aborted while waiting to be decoded"));
        },
        { once: true },
      );
      this.pump();
    });
  }

  /** Stops the worker; answers waiting are rejected. */
  async close(): Promise<void> {
    this.closed = true;
    for (const queue of this.queues.values())
      for (const p of queue) p.reject(new Error("the answer decoder is closed"));
    this.queues.clear();
    this.queuedBytes = 0;
    if (this.running) this.finish(new Error("the answer decoder is closed"));
    clearTimeout(this.idleTimer);
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }

  private dequeue(p: Pending): boolean {
    const queue = this.queues.get(p.tenant);
    const i = queue?.indexOf(p) ?? -1;
    if (!queue || i === -1) return false;
    queue.splice(i, 1);
    if (queue.length === 0) this.queues.delete(p.tenant);
    this.queuedBytes -= p.body.byteLength;
    return true;
  }

  /** Starts the next answer: the first of the tenant that has waited longest for a turn. */
  private pump(): void {
    if (this.running || this.closed) return;
    if (this.queues.size === 0) {
      this.idleTimer ??= setTimeout(() => void this.stopIdle(), this.idleMs).unref();
      return;
    }
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.terminating) return; // pumped again when it has exited
    const worker = this.ensureWorker();
    if (!this.ready) return; // pumped again when it is
    let tenant = "";
    let turn = Infinity;
    for (const t of this.queues.keys()) {
      const last = this.lastServed.get(t) ?? -1;
      if (last < turn) [tenant, turn] = [t, last];
    }
    const queue = this.queues.get(tenant)!;
    const pending = queue.shift()!;
    if (queue.length === 0) this.queues.delete(tenant);
    this.queuedBytes -= pending.body.byteLength;
    this.lastServed.delete(tenant);
    this.lastServed.set(tenant, this.served++);
    if (this.lastServed.size > 4096) {
      const [oldest] = this.lastServed.keys();
      this.lastServed.delete(oldest!);
    }
    const timer = setTimeout(() => {
      this.finish(
        new Error(`decoding the answer took more than ${this.budgetMs} ms, the limit for a source's answer`),
      );
      this.replaceWorker();
    }, this.budgetMs);
    this.running = { pending, timer };
    const body = pending.body;
    // Hand the bytes over without a copy when they own their buffer.
    const owned = body.byteOffset === 0 && body.byteLength === body.buffer.byteLength;
    const sent = owned ? body : new Uint8Array(body);
    worker.postMessage({ id: pending.id, job: pending.job, body: sent }, [sent.buffer as ArrayBuffer]);
  }

  private finish(err: Error | undefined, result?: unknown): void {
    const r = this.running;
    if (!r) return;
    this.running = undefined;
    clearTimeout(r.timer);
    if (err) r.pending.reject(err);
    else r.pending.resolve(result);
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const w = spawnParseWorker(this.heapMb);
    this.ready = false;
    w.unref();
    w.on("message", (m: { id: number; result?: unknown; error?: string } | "ready") => {
      if (m === "ready") {
        if (this.worker === w) this.ready = true;
        return this.pump();
      }
      if (this.running?.pending.id !== m.id) return;
      this.finish(m.error !== undefined ? new Error(m.error) : undefined, m.result);
      this.pump();
    });
    w.on("error", (err: Error & { code?: string }) => {
      if (this.worker !== w) return;
      this.finish(
        new Error(
          err.code === "ERR_WORKER_OUT_OF_MEMORY"
            ? `decoding the answer needed more than ${this.heapMb} MiB of memory, the limit for a source's answer`
            : `the parse worker failed (${err.code ?? err.name})`,
        ),
      );
      this.replaceWorker();
    });
    w.on("exit", () => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.finish(new Error("the parse worker stopped"));
      this.pump();
    });
    this.worker = w;
    return w;
  }

  private replaceWorker(): void {
    const w = this.worker;
    this.worker = undefined;
    if (!w) return this.pump();
    const done = (this.terminating = w.terminate().finally(() => {
      if (this.terminating === done) this.terminating = undefined;
      this.pump();
    }));
  }

  private async stopIdle(): Promise<void> {
    this.idleTimer = undefined;
    if (this.running || this.queues.size > 0) return;
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }
}

/**
 * The parse worker's thread, with its heap capped. Run from TypeScript sources (tests,
 * `npm run governor`), the thread registers the same TypeScript loader first.
 */
function spawnParseWorker(heapMb: number): Worker {
  const resourceLimits = { maxOldGenerationSizeMb: heapMb, maxYoungGenerationSizeMb: 8, stackSizeMb: 4 };
  if (!import.meta.url.endsWith(".ts"))
    return new Worker(new URL("./parse-worker.js", import.meta.url), { resourceLimits });
  const entry = new URL("./parse-worker.ts", import.meta.url).href;
  return new Worker(
    `import("tsx/esm/api").then(({ register }) => { register(); return import(${JSON.stringify(entry)}); });`,
    { eval: true, resourceLimits },
  );
}

let shared: AnswerDecoder | undefined;

/** The process's decoder, made on first use. */
export function sharedAnswerDecoder(): AnswerDecoder {
  return (shared ??= new AnswerDecoder());
}
