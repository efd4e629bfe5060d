import type { KubernetesObject } from "@kubernetes/client-node";
import { expect } from "chai";
import { pino } from "pino";
import { eventually } from "../../test/support/eventually.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import { InformerCache } from "./informer-cache.js";

const PODS = "/api/v1/namespaces/shop/pods";
const pod = (name: string) => ({ apiVersion: "v1", kind: "Pod", metadata: { name, namespace: "shop" } });

describe("InformerCache", () => {
  it("lists and watches a collection once however many users read it, and gives a late subscriber what is already cached", async () => {
    const kube = new FakeKube();
    kube.seed(`${PODS}/a`, pod("a"));
    const watched: string[] = [];
    const informer = kube.informer.bind(kube);
    kube.informer = (path, handlers, opts) => (watched.push(path), informer(path, handlers, opts));
    const cache = new InformerCache(kube, pino({ level: "silent" }));
    const first = cache.informer<KubernetesObject>("/api/v1/pods");
    await first.synced;
    const second = cache.informer<KubernetesObject>("/api/v1/pods");
    expect(second).to.equal(first);
    expect(watched).to.deep.equal(["/api/v1/pods"]);

    const seen: string[] = [];
    const unsubscribe = second.subscribe({ add: (p) => seen.push(`add ${p.metadata?.name}`) });
    expect(seen).to.deep.equal(["add a"]);
    kube.seed(`${PODS}/b`, pod("b"));
    await eventually(() => expect(seen).to.deep.equal(["add a", "add b"]));
    unsubscribe();
    kube.seed(`${PODS}/c`, pod("c"));
    await eventually(() =>
      expect(first.list().map((p) => p.metadata?.name)).to.have.members(["a", "b", "c"]),
    );
    expect(seen).to.deep.equal(["add a", "add b"]);
    await cache.stop();
  });

  it("refuses one path asked for with other options (a different selector is a different cache)", async () => {
    const cache = new InformerCache(new FakeKube(), pino({ level: "silent" }));
    cache.informer("/api/v1/pods");
    expect(() => cache.informer("/api/v1/pods", { labelSelector: "app=web" })).to.throw(
      /shared with other options/,
    );
    await cache.stop();
  });
});
