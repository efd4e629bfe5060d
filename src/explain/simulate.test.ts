import { expect } from "chai";
import { parseSet, simulate, SimulateError } from "./simulate.js";
import { KubeApiError, type KubeClient } from "../k8s/client.js";

/** A read-only stub apiserver: path → body (404 otherwise); records the paths asked. */
function stub(routes: Record<string, unknown>): { client: KubeClient; asked: string[] } {
  const asked: string[] = [];
  const get = async (path: string, query?: Record<string, string>) => {
    asked.push(
      query && Object.keys(query).length ? `${path}?${new URLSearchParams(query).toString()}` : path,
    );
    if (path in routes) return routes[path];
    throw new KubeApiError(404, "NotFound", `GET ${path}: 404`, { message: "not found" });
  };
  const client = {
    get,
    getOrUndefined: async (p: string, q?: Record<string, string>) => {
      try {
        return await get(p, q);
      } catch (e) {
        if (e instanceof KubeApiError && e.statusCode === 404) return undefined;
        throw e;
      }
    },
  } as unknown as KubeClient;
  return { client, asked };
}

const hpaWith = (metrics: unknown[]) => ({
  metadata: { name: "h" },
  spec: {
    scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "web" },
    minReplicas: 1,
    maxReplicas: 10,
    metrics,
  },
});
const common = (selector: string | undefined) => ({
  "/apis/apps/v1": { resources: [{ name: "deployments", kind: "Deployment" }] },
  "/api/v1": {
    resources: [
      { name: "services", kind: "Service" },
      { name: "namespaces", kind: "Namespace" },
    ],
  },
  "/apis/apps/v1/namespaces/n/deployments/web/scale": {
    spec: { replicas: 3 },
    status: { replicas: 3, ...(selector ? { selector } : {}) },
  },
  "/api/v1/namespaces/n/pods": {
    items: [1, 2, 3].map((i) => ({
      metadata: { name: `web-${i}` },
      status: { phase: "Running", conditions: [{ type: "Ready", status: "True" }] },
    })),
  },
});

describe("governor simulate reads what the HPA reads, where the HPA reads it", () => {
  it("an Object metric whose describedObject has no apiVersion (valid: AllowEmptyAPIGroup) gives a clean answer, not a TypeError", async () => {
    const { client } = stub({
      ...common("app=web"),
      "/apis/autoscaling/v2/namespaces/n/horizontalpodautoscalers/h": hpaWith([
        {
          type: "Object",
          object: {
            metric: { name: "q" },
            describedObject: { kind: "Service", name: "s" },
            target: { type: "Value", value: "10" },
          },
        },
      ]),
    });
    let err: unknown;
    await simulate(client, { kind: "hpa", name: "h", namespace: "n" }).catch((e: unknown) => (err = e));
    expect(err === undefined || err instanceof SimulateError, String(err)).to.equal(true);
  });

  it("an Object metric on a Namespace is read root-scoped: /namespaces/n/metrics/q (client-go getForNamespace)", async () => {
    const { client, asked } = stub({
      ...common("app=web"),
      "/apis/autoscaling/v2/namespaces/n/horizontalpodautoscalers/h": hpaWith([
        {
          type: "Object",
          object: {
            metric: { name: "q" },
            describedObject: { apiVersion: "v1", kind: "Namespace", name: "n" },
            target: { type: "Value", value: "10" },
          },
        },
      ]),
    });
    await simulate(client, { kind: "hpa", name: "h", namespace: "n" });
    expect(
      asked.some((p) => p.startsWith("/apis/custom.metrics.k8s.io/v1beta2/namespaces/n/metrics/q")),
      asked.join("\n"),
    ).to.equal(true);
  });

  it("refuses a /scale with no selector, as the HPA does nothing then (InvalidSelector)", async () => {
    const { client } = stub({
      ...common(undefined),
      "/apis/autoscaling/v2/namespaces/n/horizontalpodautoscalers/h": hpaWith([
        {
          type: "External",
          external: { metric: { name: "q" }, target: { type: "AverageValue", averageValue: "10" } },
        },
      ]),
    });
    let err: unknown;
    await simulate(client, { kind: "hpa", name: "h", namespace: "n" }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(SimulateError);
    expect((err as Error).message).to.contain("InvalidSelector");
  });

  it("refuses a --set that is not metric=quantity, or names a metric twice", () => {
    expect(() => parseSet(["rps"])).to.throw(/expected metric=value/);
    expect(() => parseSet(["rps=fast"])).to.throw(/expected metric=value/);
    expect(() => parseSet(["rps=1", "rps=2"])).to.throw(/given twice/);
    expect([...parseSet(["rps=1.5k"])]).to.deep.equal([["rps", "1.5k"]]);
  });

  it("refuses a --set for a resource metric, which it does not read", async () => {
    const { client } = stub({
      ...common("app=web"),
      "/apis/autoscaling/v2/namespaces/n/horizontalpodautoscalers/h": hpaWith([
        {
          type: "Resource",
          resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 50 } },
        },
      ]),
    });
    let err: unknown;
    await simulate(client, { kind: "hpa", name: "h", namespace: "n" }, new Map([["cpu", "1"]])).catch(
      (e: unknown) => (err = e),
    );
    expect((err as Error).message).to.match(/^--set cpu: a resource metric/);
  });

  it("refuses a --set for a metric the HPA does not have", async () => {
    const { client } = stub({
      ...common("app=web"),
      "/apis/autoscaling/v2/namespaces/n/horizontalpodautoscalers/h": hpaWith([
        {
          type: "External",
          external: { metric: { name: "q" }, target: { type: "AverageValue", averageValue: "10" } },
        },
      ]),
      "/apis/external.metrics.k8s.io/v1beta1/namespaces/n/q": { items: [{ value: "300" }] },
    });
    let err: unknown;
    await simulate(client, { kind: "hpa", name: "h", namespace: "n" }, new Map([["typo", "1"]])).catch(
      (e: unknown) => (err = e),
    );
    expect((err as Error).message).to.equal("--set typo: hpa/h has no metric of that name");
  });
});
