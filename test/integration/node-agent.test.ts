import { expect } from "chai";
import { applyYaml, freshNamespace, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { buildOnce, requireNodeAgent } from "../support/in-cluster.js";

interface ContainerStatus {
  restartCount: number;
  state: {
    waiting?: { reason: string; message?: string };
    running?: unknown;
    terminated?: { exitCode: number };
  };
  lastState: { terminated?: { exitCode: number; reason: string } };
}
interface Pod {
  spec: { nodeName?: string };
  status?: { phase?: string; podIP?: string; containerStatuses?: ContainerStatus[] };
}

/** The local control plane's node agent behaves as a kubelet would, where Governor's tests rely on it. */
describe("the node agent runs pods as a kubelet would (integration)", function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;
  const pod = (name: string) => cluster.client.get<Pod>(`/api/v1/namespaces/${ns.name}/pods/${name}`);
  const container = async (name: string) => (await pod(name)).status?.containerStatuses?.[0];

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    await requireNodeAgent(cluster);
    buildOnce();
    ns = await freshNamespace(cluster, "agent", { podNetwork: true });
  });
  after(async () => ns?.delete());

  it("leaves a pod of an image it cannot run Pending with ErrImagePull and the reason", async () => {
    applyYaml(
      cluster,
      ns.name,
      `{apiVersion: v1, kind: Pod, metadata: {name: unknown}, spec: {containers: [{name: c, image: nginx:1.27}]}}`,
    );
    await eventually(
      async () => {
        const p = await pod("unknown");
        expect(p.spec.nodeName).to.match(/^governor-node-/);
        expect(p.status?.phase).to.equal("Pending");
        const waiting = p.status?.containerStatuses?.[0]?.state.waiting;
        expect(waiting?.reason).to.equal("ErrImagePull");
        expect(waiting?.message).to.match(/not one the governor node agent can run/);
      },
      { timeoutMs: 30_000, what: "ErrImagePull" },
    );
  });

  it("restarts a crashing container with growing back-off (CrashLoopBackOff), and fails a pod that must not restart", async () => {
    applyYaml(
      cluster,
      ns.name,
      `
apiVersion: v1
kind: Pod
metadata: {name: crashing}
spec:
  containers: [{name: app, image: governor-sample-app:test, args: ["--rps", "-1"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers: [{name: app, image: governor-sample-app:test, args: ["--rps", "-1"]}]
`,
    );
    await eventually(
      async () => {
        const c = await container("crashing");
        expect(c?.restartCount).to.be.at.least(1);
        expect(c?.state.waiting?.reason).to.equal("CrashLoopBackOff");
        expect(c?.state.waiting?.message).to.match(/back-off 10s/);
        expect(c?.lastState.terminated?.exitCode).to.not.equal(0);
      },
      { timeoutMs: 30_000, intervalMs: 200, what: "CrashLoopBackOff after a restart" },
    );
    await eventually(
      async () => {
        const p = await pod("once");
        expect(p.status?.phase).to.equal("Failed");
        expect(p.status?.containerStatuses?.[0]?.restartCount).to.equal(0);
      },
      { timeoutMs: 30_000, what: "restartPolicy Never → Failed" },
    );
  });

  it("kills and restarts a container whose liveness probe fails", async () => {
    applyYaml(
      cluster,
      ns.name,
      `
apiVersion: v1
kind: Pod
metadata: {name: unhealthy}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: governor-sample-app:test
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1}
    livenessProbe: {httpGet: {path: /nope, port: http}, periodSeconds: 1, failureThreshold: 2}
`,
    );
    await eventually(
      async () => {
        const c = await container("unhealthy");
        expect(c?.restartCount).to.be.at.least(1);
        expect(c?.lastState.terminated).to.not.equal(undefined);
      },
      { timeoutMs: 40_000, intervalMs: 250, what: "a restart after the liveness probe failed" },
    );
  });

  it("deletes a pod gracefully: SIGTERM, and the pod object is gone once its containers have stopped", async () => {
    applyYaml(
      cluster,
      ns.name,
      `{apiVersion: v1, kind: Pod, metadata: {name: graceful}, spec: {containers: [{name: app, image: governor-sample-app:test, ports: [{containerPort: 8080}], readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}}]}}`,
    );
    const ip = await eventually(
      async () => {
        const p = await pod("graceful");
        // Only the current state: not a leftover `waiting` beside it.
        expect(Object.keys(p.status?.containerStatuses?.[0]?.state ?? {})).to.deep.equal(["running"]);
        return p.status!.podIP!;
      },
      { timeoutMs: 30_000, what: "graceful running" },
    );
    await eventually(async () => expect((await fetch(`http://${ip}:8080/healthz`)).status).to.equal(200));
    const started = Date.now();
    await cluster.client.delete(`/api/v1/namespaces/${ns.name}/pods/graceful`);
    await eventually(
      async () =>
        expect(await cluster.client.getOrUndefined(`/api/v1/namespaces/${ns.name}/pods/graceful`)).to.equal(
          undefined,
        ),
      { timeoutMs: 30_000, what: "the pod object gone" },
    );
    // The sample app exits on SIGTERM at once: far sooner than the 30 s grace period.
    expect(Date.now() - started).to.be.below(10_000);
  });
});
