import { expect } from "chai";
import { startStandInKubelet } from "../../tools/devcluster/stand-in-kubelet.js";
import type { KubeObject } from "../../src/k8s/client.js";
import { freshNamespace, kubectl, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";

const WIDGET_CRD = {
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: { name: "widgets.harness.governor.dev" },
  spec: {
    group: "harness.governor.dev",
    scope: "Namespaced",
    names: { plural: "widgets", singular: "widget", kind: "Widget" },
    versions: [
      {
        name: "v1",
        served: true,
        storage: true,
        schema: {
          openAPIV3Schema: {
            type: "object",
            properties: {
              spec: { type: "object", properties: { replicas: { type: "integer", minimum: 0 } } },
              status: {
                type: "object",
                properties: { replicas: { type: "integer" }, selector: { type: "string" } },
              },
            },
          },
        },
        subresources: {
          status: {},
          scale: {
            specReplicasPath: ".spec.replicas",
            statusReplicasPath: ".status.replicas",
            labelSelectorPath: ".status.selector",
          },
        },
      },
    ],
  },
};

describe("local control plane (integration)", function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;

  before(async function () {
    this.timeout(60 * 60_000); // the first run on a fresh machine builds Kubernetes
    cluster = await useCluster();
    ns = await freshNamespace(cluster, "harness");
  });
  after(async () => {
    await ns?.delete();
  });

  it("serves a custom resource's /scale subresource that kubectl scale writes through", async () => {
    const { client } = cluster;
    await client.apply(
      `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${WIDGET_CRD.metadata.name}`,
      WIDGET_CRD,
      {
        fieldManager: "governor-tests",
      },
    );
    await eventually(
      async () => {
        const crd = await client.get<{ status?: { conditions?: { type: string; status: string }[] } }>(
          `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${WIDGET_CRD.metadata.name}`,
        );
        expect(crd.status?.conditions?.find((c) => c.type === "Established")?.status).to.equal("True");
      },
      { what: "CRD established" },
    );
    const base = `/apis/harness.governor.dev/v1/namespaces/${ns.name}/widgets`;
    await eventually(() =>
      client.create(base, {
        apiVersion: "harness.governor.dev/v1",
        kind: "Widget",
        metadata: { name: "w1" },
        spec: { replicas: 1 },
      }),
    );

    await kubectl(cluster, "scale", "-n", ns.name, "widgets.harness.governor.dev/w1", "--replicas=5");

    const scale = await client.get<{ kind: string; spec: { replicas: number } }>(`${base}/w1/scale`);
    expect(scale.kind).to.equal("Scale");
    expect(scale.spec.replicas).to.equal(5);
    const widget = await client.get<{ spec: { replicas: number } }>(`${base}/w1`);
    expect(widget.spec.replicas).to.equal(5);
  });

  it("runs the deployment controller: a Deployment gets its pods, which the stand-in kubelet makes Ready on loopback IPs", async () => {
    const { client } = cluster;
    const kubelet = startStandInKubelet(client, { namespace: ns.name });
    try {
      await client.create(`/apis/apps/v1/namespaces/${ns.name}/deployments`, {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: "web" },
        spec: {
          replicas: 3,
          selector: { matchLabels: { app: "web" } },
          template: {
            metadata: { labels: { app: "web" } },
            spec: { containers: [{ name: "web", image: "example.invalid/web:1" }] },
          },
        },
      });
      const pods = await eventually(
        async () => {
          const list = await client.get<{
            items: (KubeObject & { status: { podIP?: string; phase?: string } })[];
          }>(`/api/v1/namespaces/${ns.name}/pods`, { labelSelector: "app=web" });
          expect(list.items).to.have.length(3);
          for (const p of list.items) expect(p.status.phase).to.equal("Running");
          return list.items;
        },
        { timeoutMs: 30_000, what: "3 running pods" },
      );
      const ips = pods.map((p) => p.status.podIP ?? "");
      expect(new Set(ips).size).to.equal(3);
      for (const ip of ips) expect(ip).to.match(/^127\.\d+\.\d+\.\d+$/);

      await eventually(
        async () => {
          const dep = await client.get<{ status: { readyReplicas?: number } }>(
            `/apis/apps/v1/namespaces/${ns.name}/deployments/web`,
          );
          expect(dep.status.readyReplicas).to.equal(3);
        },
        { timeoutMs: 30_000, what: "deployment readyReplicas=3" },
      );

      // Scale-down deletes pods gracefully; they must actually go away.
      await kubectl(cluster, "scale", "-n", ns.name, "deployment/web", "--replicas=1");
      await eventually(
        async () => {
          const list = await client.get<{ items: unknown[] }>(`/api/v1/namespaces/${ns.name}/pods`, {
            labelSelector: "app=web",
          });
          expect(list.items).to.have.length(1);
        },
        { timeoutMs: 30_000, what: "scale-down to 1 pod" },
      );
    } finally {
      await kubelet.stop();
    }
  });
});
