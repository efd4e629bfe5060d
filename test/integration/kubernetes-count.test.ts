import { expect } from "chai";
import { DiscoveryResourceMapper } from "../../src/k8s/resource-mapper.js";
import { KubernetesCountSource } from "../../src/sources/kubernetes.js";
import { freshNamespace, useCluster, type TestCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";

describe("kubernetes count source (integration)", function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  let ns: Awaited<ReturnType<typeof freshNamespace>>;

  before(async function () {
    this.timeout(60 * 60_000);
    cluster = await useCluster();
    ns = await freshNamespace(cluster, "count");
  });
  after(async () => ns?.delete());

  it("mappings that count the same objects share one watch, which ends with the last of them", async () => {
    let lists = 0;
    const collection = `/api/v1/namespaces/${ns.name}/configmaps`;
    // The cluster's client, counting the watches (each a list, then a watch) of this collection.
    const client = new Proxy(cluster.client, {
      get(target, prop, receiver) {
        if (prop === "informer")
          return (...args: Parameters<typeof target.informer>) => {
            if (args[0] === collection) lists++;
            return target.informer(...args);
          };
        const value: unknown = Reflect.get(target, prop, receiver);
        return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const mapper = new DiscoveryResourceMapper(client);
    const source = () =>
      new KubernetesCountSource(
        { count: { resource: "configmaps", labelSelector: "work=pending", allNamespaces: false } },
        { namespace: ns.name, client, mapper },
      );
    const configMap = (name: string) =>
      cluster.client.create(collection, {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name, labels: { work: "pending" } },
        data: { payload: "x".repeat(1000) },
      });
    await configMap("a");
    const [one, two] = [source(), source()];
    expect(await one.sample()).to.deep.equal({ kind: "scalar", value: 1 });
    expect(await two.sample()).to.deep.equal({ kind: "scalar", value: 1 });
    expect(lists, "one watch for both").to.equal(1);

    await one.close();
    await configMap("b");
    await eventually(async () => expect(await two.sample()).to.deep.equal({ kind: "scalar", value: 2 }), {
      what: "the remaining mapping still counts",
    });
    await two.close();

    const three = source();
    expect(await three.sample()).to.deep.equal({ kind: "scalar", value: 2 });
    expect(lists, "the shared watch ended with its last user; a new one started").to.equal(2);
    await three.close();
  });
});
