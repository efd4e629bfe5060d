import { expect } from "chai";
import type { PodIndex, PodInfo } from "../k8s/pod-index.js";
import { replicaPeers } from "./serve-otlp.js";

describe("OTLP: which replicas a push is shared with", () => {
  const pod = (name: string, labels: Record<string, string>, more: Partial<PodInfo> = {}): PodInfo => ({
    name,
    namespace: "governor-system",
    labels,
    ip: `10.0.0.${name.length}`,
    ready: true,
    terminating: false,
    phase: "Running",
    hostNetwork: false,
    ...more,
  });
  const governor = {
    "app.kubernetes.io/name": "governor",
    "app.kubernetes.io/instance": "governor",
    "app.kubernetes.io/component": "operator",
  };
  const index = (pods: PodInfo[]): PodIndex => ({
    list: (ns, where) => pods.filter((p) => p.namespace === ns && (!where || where(p.labels))),
    get: (ns, name) => pods.find((p) => p.namespace === ns && p.name === name),
    version: () => 0,
  });

  it("the other Ready replicas of the same install, on the receiver's port; not itself, another install, or a pod going away", () => {
    const pods = index([
      pod("gov-a", governor),
      pod("gov-bb", governor),
      pod("gov-ccc", governor, { ready: false }),
      pod("gov-dddd", governor, { terminating: true }),
      pod("other-install", { ...governor, "app.kubernetes.io/instance": "canary" }),
      pod("webhook", { ...governor, "app.kubernetes.io/component": "webhook" }),
      pod("app", { app: "web" }),
    ]);
    expect(replicaPeers(pods, "governor-system", "gov-a", 4318)).to.deep.equal([
      { name: "gov-bb", ip: "10.0.0.6", port: 4318 },
    ]);
  });

  it("none, and says it does not know itself, for a process that is not a pod of that namespace (run outside a cluster)", () => {
    expect(replicaPeers(index([pod("gov-bb", governor)]), "governor-system", "laptop", 4318)).to.equal(
      undefined,
    );
  });
});
