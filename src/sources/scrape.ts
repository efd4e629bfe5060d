/**
 * `scrape`: reads each subject pod's Prometheus text endpoint directly (no Prometheus),
 * at most 16 pods at a time, picks the series by name and labels, aggregates the matching
 * samples of a pod (sum/avg/max/min), and with `rate: true` turns a counter into a
 * per-second rate over the last two scrapes, treating a decrease as a counter reset (as
 * Prometheus' rate() does). A pod that cannot be read is left out; if none can, the
 * sample fails with the first error.
 */
import type { DestinationPolicy } from "./destination-policy.js";
import { z } from "zod";
import { StringMap, durationMs, withRules } from "../api/common.js";
import { type AnswerDecoder, sharedAnswerDecoder } from "./answer-decoder.js";
import { getBytes } from "./http-client.js";
import type { MetricSource, SampleRequest, SampleValue } from "./source.js";
import { MAX_NAME_LENGTH, MAX_URL_LENGTH, SourceTimeout, defineSource } from "./kind.js";

/** The most labels a scrape source matches. */
const MAX_MATCH_LABELS = 32;

/** `spec.source.scrape`. */
export const ScrapeSpec = z
  .object({
    port: z.number().int().min(1).max(65535),
    path: z.string().max(MAX_URL_LENGTH).regex(/^\//, "must start with /").default("/metrics"),
    scheme: z.enum(["http", "https"]).default("http"),
    series: z
      .string()
      .min(1)
      .max(MAX_NAME_LENGTH)
      .meta({ description: "Name of the series to read, e.g. http_requests_total." }),
    matchLabels: withRules(StringMap, [
      {
        rule: `self.size() <= ${MAX_MATCH_LABELS}`,
        message: `at most ${MAX_MATCH_LABELS} labels`,
        check: (self) => Object.keys(self).length <= MAX_MATCH_LABELS,
      },
    ])
      .optional()
      .meta({ description: `Only samples with these labels (at most ${MAX_MATCH_LABELS}).` }),
    aggregate: z
      .enum(["sum", "avg", "max", "min"])
      .default("sum")
      .meta({ description: "How matching samples of one pod combine." }),
    rate: z
      .boolean()
      .default(false)
      .meta({ description: "Treat the series as a counter and serve its per-second rate." }),
    timeout: SourceTimeout,
  })
  .meta({ description: "Read each subject pod's Prometheus text endpoint directly (subject must be pods)." });

type Spec = z.output<typeof ScrapeSpec>;

const CONCURRENCY = 16;

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array<PromiseSettledResult<R>>(items.length);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      try {
        results[i] = { status: "fulfilled", value: await fn(items[i]!) };
      } catch (reason) {
        results[i] = { status: "rejected", reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Per-second rate between two counter readings, reset-aware. */
export function counterRate(
  prev: { value: number; at: number },
  cur: { value: number; at: number },
): number | undefined {
  const dt = (cur.at - prev.at) / 1000;
  if (dt <= 0) return undefined;
  const increase = cur.value >= prev.value ? cur.value - prev.value : cur.value; // a reset starts from 0
  return increase / dt;
}

/** See the module comment. */
export class ScrapeSource implements MetricSource {
  readonly needsObjects = true;
  private readonly previous = new Map<string, { value: number; at: number; ip: string }>();
  private readonly timeoutMs: number;

  private readonly decoder: AnswerDecoder;

  constructor(
    private readonly spec: Spec,
    private readonly ctx: {
      policy?: DestinationPolicy;
      /** The most one pod's answer may be, in bytes. @default MAX_RESPONSE_BYTES */
      maxResponseBytes?: number;
      /** Decodes answers off the event loop when they are large. @default sharedAnswerDecoder() */
      decoder?: AnswerDecoder;
      /**
       * Whether pods on their node's network are read: their IP is the node's, so the
       * port a mapping names would be any node service's (`--allow-host-network-scrape`).
       * @default false
       */
      allowHostNetwork?: boolean;
      /** The time a reading is taken at, in ms (tests set it). @default Date.now */
      now?: () => number;
    } = {},
  ) {
    this.timeoutMs = durationMs(spec.timeout);
    this.decoder = ctx.decoder ?? sharedAnswerDecoder();
  }

  async sample(req: SampleRequest): Promise<SampleValue> {
    const withIp = (req.objects ?? []).filter((o): o is typeof o & { ip: string } => Boolean(o.ip));
    const pods = this.ctx.allowHostNetwork ? withIp : withIp.filter((o) => !o.hostNetwork);
    if (pods.length === 0 && withIp.length > 0)
      throw new Error(
        `the ${withIp.length === 1 ? "pod uses" : `${withIp.length} pods use`} the node's network, which scrape does not read (a node's ports are not the pod's; an admin can allow it with --allow-host-network-scrape)`,
      );
    if (pods.length === 0) return { kind: "objects", values: new Map() };
    const results = await mapLimit(pods, CONCURRENCY, async (pod) => {
      const host = pod.ip.includes(":") ? `[${pod.ip}]` : pod.ip;
      const body = await getBytes(`${this.spec.scheme}://${host}:${this.spec.port}${this.spec.path}`, {
        tenant: req.namespace,
        signal: req.signal,
        timeoutMs: this.timeoutMs,
        headers: { accept: "text/plain;version=0.0.4" },
        policy: this.ctx.policy,
        maxBytes: this.ctx.maxResponseBytes,
      });
      return { pod, value: await this.select(body, req), at: (this.ctx.now ?? Date.now)() };
    });
    const values = new Map<string, number>();
    const seen = new Set<string>();
    let firstError: string | undefined;
    for (const r of results) {
      if (r.status === "rejected") {
        firstError ??= (r.reason as Error).message;
        continue;
      }
      const { pod, value, at } = r.value;
      seen.add(pod.name);
      if (value === undefined) continue;
      if (!this.spec.rate) {
        values.set(pod.name, value);
        continue;
      }
      const prev = this.previous.get(pod.name);
      this.previous.set(pod.name, { value, at, ip: pod.ip });
      // A pod that got a new IP is a new process: its counter is not comparable.
      if (prev && prev.ip === pod.ip) {
        const rate = counterRate(prev, { value, at });
        if (rate !== undefined) values.set(pod.name, rate);
      }
    }
    for (const name of this.previous.keys())
      if (!seen.has(name) && !pods.some((p) => p.name === name)) this.previous.delete(name);
    if (values.size === 0 && firstError && seen.size === 0)
      throw new Error(`no pod could be scraped: ${firstError}`);
    return { kind: "objects", values };
  }

  /** The aggregated value of the selected series in one exposition body, if present. */
  private async select(body: Buffer, req: SampleRequest): Promise<number | undefined> {
    const s = await this.decoder.decode(
      body,
      { kind: "exposition", series: this.spec.series, matchLabels: this.spec.matchLabels },
      { tenant: req.namespace, signal: req.signal },
    );
    if (s.count === 0) return undefined;
    switch (this.spec.aggregate) {
      case "sum":
        return s.sum;
      case "avg":
        return s.sum / s.count;
      case "max":
        return s.max;
      case "min":
        return s.min;
    }
  }
}

/** The `scrape` source kind: pods only; a rate's window is the time between two samples. */
export const scrape = defineSource({
  kind: "scrape",
  schema: ScrapeSpec,
  subject: { resource: "pods", message: "the scrape source reads pods: set subject.resource to pods" },
  build: (spec, ctx) =>
    new ScrapeSource(spec, {
      policy: ctx.policy,
      maxResponseBytes: ctx.maxResponseBytes,
      decoder: ctx.decoder,
      allowHostNetwork: ctx.hostNetworkScrape,
    }),
  rateWindowMs: (spec, intervalMs) => (spec.rate ? intervalMs : undefined),
});
