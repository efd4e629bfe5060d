import type { KubernetesObject } from "@kubernetes/client-node";
import { expect } from "chai";
import type { InformerHandlers } from "../k8s/informer.js";
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

    release!();
    const listed = () => kube.calls.filter((c) => c.path === "/api/v1/namespaces/shop/services").length;
    expect(names(await lister.list(SERVICES, "shop", web))).to.deep.equal(["a", "c"]);
    expect(listed(), "a collection nobody holds is listed, not kept").to.equal(1);
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
    expect(warned).to.deep.equal(["cannot watch the subjects of a MetricMapping: listing them on request"]);
  });

  /** A lister whose watches are `fake`'s informers (each call makes one, recorded). */
  function withFakeWatch(kube: FakeKube) {
    const made: { handlers: InformerHandlers<KubernetesObject>; stopped: boolean; sync: () => void }[] = [];
    kube.informer = (_path, handlers) => {
      let sync!: () => void;
      const synced = new Promise<void>((resolve) => (sync = resolve));
      const entry = { handlers: handlers as InformerHandlers<KubernetesObject>, stopped: false, sync };
      made.push(entry);
      return {
        list: () => [],
        get: () => undefined,
        synced,
        stop: async () => void (entry.stopped = true),
      };
    };
    return made;
  }

  it("lists on request once the watch is refused after the first list (RBAC without watch)", async () => {
    const kube = new FakeKube();
    kube.seed("/api/v1/namespaces/shop/services/a", service("a", "web"));
    const made = withFakeWatch(kube);
    const lister = new KubeSubjectLister(kube as never, mapper, noPods);
    lister.hold(SERVICES, "shop");
    await eventually(() => expect(made).to.have.length(1));
    made[0]!.sync();
    await lister.list(SERVICES, "shop", web); // from the (empty) first list
    made[0]!.handlers.error?.(Object.assign(new Error("Forbidden"), { statusCode: 403 }), 1000);
    expect(made[0]!.stopped).to.equal(true);
    expect(names(await lister.list(SERVICES, "shop", web))).to.deep.equal(["a"]);
  });

  it("answers a request waiting for the first list with the reason the list fails, at once", async () => {
    const kube = new FakeKube();
    const made = withFakeWatch(kube);
    const lister = new KubeSubjectLister(kube as never, mapper, noPods);
    lister.hold(SERVICES, "shop");
    await eventually(() => expect(made).to.have.length(1));
    const waiting = lister.list(SERVICES, "shop", web);
    made[0]!.handlers.error?.(new Error("the server is currently unable to handle the request"), 200);
    await waiting.then(
      () => expect.fail("answered without a list"),
      (err: Error) =>
        expect(err.message).to.match(/cannot list services in shop yet: the server is currently unable/),
    );
  });

  it("stops a watch released before its first list", async () => {
    const kube = new FakeKube();
    const made = withFakeWatch(kube);
    const lister = new KubeSubjectLister(kube as never, mapper, noPods);
    const release = lister.hold(SERVICES, "shop");
    await eventually(() => expect(made).to.have.length(1));
    release!();
    expect(made[0]!.stopped).to.equal(true);
  });
});
