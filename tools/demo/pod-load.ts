/**
 * The in-cluster demo's load: the sample-app pods (image `governor-sample-app`, run by the
 * node agent) count requests themselves; this spreads a total rate evenly over the Ready
 * pods of a selector by telling each its share (`POST /load?rps=N`), as a load balancer
 * would, whenever the rate or the set of pods changes.
 */
import type { PodIndex } from "../../src/k8s/pod-index.js";
import { servingPodIPs } from "./fake-app.js";

/** See the module comment. */
export class PodLoad {
  /** Total requests per second across all pods. */
  rate = 0;
  private timer?: NodeJS.Timeout;
  private told = new Map<string, number>(); // pod IP → rps last told

  constructor(
    private readonly pods: PodIndex,
    private readonly namespace: string,
    private readonly labels: Record<string, string>,
    private readonly port: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sync(), 250);
  }

  /** Pods serving now. */
  get size(): number {
    return this.told.size;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.told.clear();
  }

  private async sync(): Promise<void> {
    const ips = servingPodIPs(this.pods, this.namespace, this.labels);
    const share = ips.length ? this.rate / ips.length : 0;
    for (const ip of [...this.told.keys()]) if (!ips.includes(ip)) this.told.delete(ip);
    await Promise.all(
      ips
        .filter((ip) => this.told.get(ip) !== share)
        .map(async (ip) => {
          try {
            const res = await fetch(`http://${ip}:${this.port}/load?rps=${share}`, {
              method: "POST",
              signal: AbortSignal.timeout(1000),
            });
            if (res.ok) this.told.set(ip, share);
          } catch {
            // not listening yet: told on the next round
          }
        }),
    );
  }
}
