/**
 * Kubernetes Events for state changes (`kubectl describe` shows them). Repeats of the same
 * event for the same object within 10 minutes bump `count` instead of creating new Events,
 * as client-go's event correlator does. Failures to record are logged, never thrown.
 */
import type { Logger } from "pino";
import { LRUCache } from "lru-cache";
import type { KubeApi } from "../k8s/client.js";
import { boundedText } from "../util/bounded-text.js";

/** The object an Event is about. */
export interface EventSubject {
  apiVersion: string;
  kind: string;
  namespace: string;
  name: string;
  uid?: string;
}

/** See the module comment. */
export class EventRecorder {
  /** The events recorded lately, by object and content: the 5,000 most recent. */
  private readonly recent = new LRUCache<string, { name: string; count: number; first: string; at: number }>({
    max: 5000,
  });

  constructor(
    private readonly client: KubeApi,
    private readonly component: string,
    private readonly logger: Logger,
  ) {}

  /** Records an event (fire and forget). */
  record(subject: EventSubject, type: "Normal" | "Warning", reason: string, message: string): void {
    // Cut before it keys the cache: a source's long text must not be held whole.
    void this.post(subject, type, reason, boundedText(message)).catch((err: unknown) =>
      this.logger.debug({ err, reason }, "could not record event"),
    );
  }

  private async post(subject: EventSubject, type: string, reason: string, message: string): Promise<void> {
    const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    const key = `${subject.uid ?? `${subject.namespace}/${subject.name}`}|${type}|${reason}|${message}`;
    const seen = this.recent.get(key);
    const base = `/api/v1/namespaces/${subject.namespace}/events`;
    if (seen && Date.now() - seen.at < 10 * 60_000) {
      seen.count++;
      seen.at = Date.now();
      await this.client.mergePatch(`${base}/${seen.name}`, { count: seen.count, lastTimestamp: now });
      return;
    }
    const name = `${subject.name}.${Date.now().toString(16)}${Math.floor(Math.random() * 0xfff).toString(16)}`;
    this.recent.set(key, { name, count: 1, first: now, at: Date.now() });
    await this.client.create(base, {
      apiVersion: "v1",
      kind: "Event",
      metadata: { name, namespace: subject.namespace },
      involvedObject: subject,
      reason,
      message,
      type,
      source: { component: this.component },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
  }
}
