/**
 * "Scale from zero": a ScalableWorkload idle at 0 replicas (`minReplicas: 0`, activation on
 * an External metric that Governor samples every second from a local JSON endpoint) —
 * the time from the value rising above the threshold to the first Ready pod of its
 * Deployment; against the platform's own time to take a Deployment of the same pods from
 * 0 to 1 Ready replica (a /scale patch, as the HPA would write). The two alternate, round
 * by round, after a discarded warm-up round; each round starts with no pod left.
 * Governor's figure includes the wait for its next sample (up to one interval). The pods
 * really start (the node agent runs them), so both figures include a Node.js start-up.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { type Bench, sleep } from "./harness.js";

/** Its own namespace, without the stand-in annotations: these pods really run (node agent). */
const NS = "governor-bench-wake";
import { pairedRatios, showSpread } from "./stats.js";

const POD_SPEC = {
  containers: [
    {
      name: "app",
      image: "governor-sample-app:bench",
      ports: [{ containerPort: 8080 }],
      readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
    },
  ],
};

interface Deployment {
  status?: { replicas?: number; readyReplicas?: number };
}

export async function scaleFromZeroRows(b: Bench, rounds: number): Promise<void> {
  let value = 0;
  const source = createServer((_req, res) =>
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ queue: value })),
  );
  await new Promise<void>((r) => source.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(source.address() as AddressInfo).port}/`;
  const apps = `/apis/apps/v1/namespaces/${NS}/deployments`;
  const gov = `/apis/governor.dev/v1alpha1/namespaces/${NS}`;
  try {
    await b.client.create("/api/v1/namespaces", {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: NS },
    });
    await b.client.create(`${gov}/metricmappings`, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "MetricMapping",
      metadata: { name: "wake-queue" },
      spec: {
        metric: "wake_queue",
        subject: { external: {} },
        interval: "1s",
        staleAfter: "5s",
        source: { http: { url, jsonPath: "$.queue" } },
      },
    });
    await b.client.create(`${gov}/scalableworkloads`, {
      apiVersion: "governor.dev/v1alpha1",
      kind: "ScalableWorkload",
      metadata: { name: "wake" },
      spec: {
        replicas: 0,
        selector: { matchLabels: { app: "wake" } },
        template: { metadata: { labels: { app: "wake" } }, spec: POD_SPEC },
        autoscaling: {
          minReplicas: 0,
          maxReplicas: 1,
          metrics: [{ mapping: "wake-queue", target: { averageValue: "1" } }],
          activation: { mapping: "wake-queue", threshold: "0", cooldown: "0s" },
        },
      },
    });
    await b.client.create(apps, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "plain" },
      spec: {
        replicas: 0,
        selector: { matchLabels: { app: "plain" } },
        template: { metadata: { labels: { app: "plain" } }, spec: POD_SPEC },
      },
    });
    const ready = async (name: string) =>
      (await b.client.get<Deployment>(`${apps}/${name}`)).status?.readyReplicas ?? 0;
    const waitFor = async (what: string, check: () => Promise<boolean>, timeoutMs = 120_000) => {
      const t0 = performance.now();
      while (!(await check())) {
        if (performance.now() - t0 > timeoutMs)
          throw new Error(`scale from zero: ${what} not within ${timeoutMs} ms`);
        await sleep(50);
      }
      return (performance.now() - t0) / 1000;
    };
    const noPods = (app: string) => async () =>
      (
        await b.client.get<{ items: unknown[] }>(`/api/v1/namespaces/${NS}/pods`, {
          labelSelector: `app=${app}`,
        })
      ).items.length === 0;
    const scalePlain = (replicas: number) =>
      b.client.mergePatch(`${apps}/plain/scale`, { spec: { replicas } });

    await waitFor("Governor's Deployment exists", async () =>
      b.client.get(`${apps}/wake`).then(
        () => true,
        () => false,
      ),
    );
    const measure = {
      governor: async () => {
        value = 1;
        const s = await waitFor("a Ready pod after activation", async () => (await ready("wake")) >= 1);
        value = 0; // cooldown 0s: back to 0 at the next sample
        await waitFor("the woken pods gone", noPods("wake"));
        return s;
      },
      platform: async () => {
        const t0 = performance.now();
        await scalePlain(1);
        await waitFor("a Ready pod after /scale", async () => (await ready("plain")) >= 1);
        const s = (performance.now() - t0) / 1000;
        await scalePlain(0);
        await waitFor("the plain pods gone", noPods("plain"));
        return s;
      },
    };
    const a: number[] = [];
    const p: number[] = [];
    for (let r = 0; r <= rounds; r++) {
      const [x, y] = r % 2 ? [measure.platform, measure.governor] : [measure.governor, measure.platform];
      const first = await x();
      const second = await y();
      if (r === 0) continue; // warm-up
      const [g, pl] = r % 2 ? [second, first] : [first, second];
      a.push(g);
      p.push(pl);
    }
    const ratios = pairedRatios(a, p);
    b.rows.push({
      name: "scale from zero: activation value above threshold → first Ready pod (interval 1s), s",
      figure: showSpread(a),
      baseline: `${showSpread(p)} (a Deployment's /scale 0 → 1 → Ready)`,
      ratio: showSpread(ratios, 2),
      series: { Governor: a, baseline: p, ratio: ratios },
    });
  } finally {
    value = 0;
    source.close();
    source.closeAllConnections();
    await b.client.delete(`/api/v1/namespaces/${NS}`).catch(() => undefined);
  }
}
