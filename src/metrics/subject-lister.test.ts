import { expect } from "chai";
import { FakeKube } from "../../test/support/fake-kube.js";
import { eventually } from "../../test/support/eventually.js";
import type { ResourceMapper } from "../k8s/resource-mapper.js";
import { LabelSelector } from "../selectors/label-selector.js";
import { KubeSubjectLister } from "./subject-lister.js";

const SERVICES = { group: "", resource: "services" };
const mapper: ResourceMapper = {
  lookup: async (gr) =>
    gr.resource === "services"
      ? {
          group: "",
          version: "v1",
          resource: "services",
          kind: "Service",
          namespaced: true,
          apiVersion: "v1",
        }
      : undefined,
};
const noPods = { list: () => [], get: () => undefined, version: () => 0 };
const service = (name: string, app: string) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "shop", labels: { app } },
});
const web = LabelSelector.parse("app=web");
const names = (objects: { name: string }[]) => objects.map((o) => o.name).sort();

describe("KubeSubjectLister", () => {
  it("answers selector requests for a mapping's subjects from a watch of their collection, with no call per request", async () => {
    const kube = new FakeKube();
    kube.seed("/api/v1/namespaces/shop/services/a", service("a", "web"));
    kube.seed("/api/v1/namespaces/shop/services/b", service("b", "db"));
    const lister = new KubeSubjectLister(kube as never, mapper, noPods);
    const release = lister.hold(SERVICES, "shop");
    expect(names(await lister.list(SERVICES, "shop", web))).to.deep.equal(["a"]);
    const calls = kube.calls.length;
    const before = lister.version(SERVICES, "shop");
    for (let i = 0; i < 100; i++) await lister.list(SERVICES, "shop", web);
    expect(kube.calls.length).to.equal(calls);

    kube.seed("/api/v1/namespaces/shop/services/c", service("c", "web"));
    await eventually(async () =>
      expect(names(await lister.list(SERVICES, "shop", web))).to.deep.equal(["a", "c"]),
    );
    expect(lister.version(SERVICES, "shop")).to.not.equal(before);
    expect(lister.get(SERVICES, "shop", "c")).to.deep.equal({ name: "c", labels: { app: "web" } });

    release();
    await lister.list(SERVICES, "shop", web).then(
      () => expect.fail("listed after release"),
      (err: Error) => expect(err.message).to.match(/are not watched/),
    );
  });

  it("lists on request, reused for 2 s, a collection Governor may list but not watch", async () => {
    const kube = new FakeKube();
    kube.seed("/api/v1/namespaces/shop/services/a", service("a", "web"));
    // The watch is forbidden (RBAC gave get and list only).
    kube.informer = (_path, handlers) => {
      setImmediate(() => handlers.error?.(Object.assign(new Error("Forbidden"), { statusCode: 403 }), 1000));
      return { list: () => [], get: () => undefined, synced: new Promise(() => {}), stop: async () => {} };
    };
    const warned: string[] = [];
    const lister = new KubeSubjectLister(kube as never, mapper, noPods, (msg) => warned.push(msg));
    lister.hold(SERVICES, "shop");
    expect(names(await lister.list(SERVICES, "shop", web))).to.deep.equal(["a"]);
    expect(names(await lister.list(SERVICES, "shop", web))).to.deep.equal(["a"]);
    expect(kube.calls.filter((c) => c.path === "/api/v1/namespaces/shop/services")).to.have.length(1);
    expect(warned).to.deep.equal(["may not watch the subjects of a MetricMapping: listing them on request"]);
  });
});
