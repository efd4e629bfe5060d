import { expect } from "chai";
import { pino } from "pino";
import { LeaderElector } from "../../src/controller/leader-election.js";
import { freshNamespace, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";

describe("leader election with a Lease (integration)", function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    ns = await freshNamespace(cluster, "lease");
  });
  after(async () => ns?.delete());

  it("elects exactly one of several replicas, and another takes over when the leader stops", async () => {
    const leading = new Set<string>();
    /** The most replicas that believed they led at one moment, by their own callbacks. */
    let most = 0;
    const electors = ["a", "b", "c"].map(
      (id) =>
        new LeaderElector(
          cluster.client,
          {
            namespace: ns.name,
            name: "governor-leader",
            identity: id,
            leaseDurationMs: 3000,
            renewDeadlineMs: 2000,
            retryPeriodMs: 200,
            onStartedLeading: () => {
              leading.add(id);
              most = Math.max(most, leading.size);
            },
            onStoppedLeading: () => leading.delete(id),
          },
          pino({ level: "silent" }),
        ),
    );
    for (const e of electors) e.start();
    try {
      await eventually(() => expect(leading.size).to.equal(1), { what: "one leader" });
      await new Promise((r) => setTimeout(r, 1000));
      expect(leading.size, "still exactly one after several renewals").to.equal(1);
      const [first] = [...leading];
      const lease = await cluster.client.get<{ spec: { holderIdentity: string } }>(
        `/apis/coordination.k8s.io/v1/namespaces/${ns.name}/leases/governor-leader`,
      );
      expect(lease.spec.holderIdentity).to.equal(first);

      await electors.find((_, i) => ["a", "b", "c"][i] === first)!.stop();
      await eventually(
        () => {
          expect(leading.size).to.equal(1);
          expect([...leading][0]).to.not.equal(first);
        },
        { timeoutMs: 10_000, what: "a new leader" },
      );
      expect(most, "never two leaders at once, through election and hand-over").to.equal(1);
    } finally {
      for (const e of electors) await e.stop();
    }
  });
});
