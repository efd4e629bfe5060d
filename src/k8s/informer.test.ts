import { createServer, type Server } from "node:http";
import type { KubernetesObject } from "@kubernetes/client-node";
import { expect } from "chai";
import { listenAndConnect } from "../../test/support/loopback-kubeconfig.js";
import { Backoff } from "../util/backoff.js";
import { LIST_PAGE_SIZE, type ListPage, startInformer } from "./informer.js";

/**
 * A minimal apiserver for one collection: lists return the current pods; the first watch
 * is cut off mid-stream, the second answers 410 Gone (resourceVersion too old), later ones
 * stream an ADDED event and stay open.
 */
function fakeApiserver() {
  let lists = 0;
  let watches = 0;
  const managedFields = [{ manager: "kubectl", operation: "Apply", fieldsV1: { "f:metadata": {} } }];
  const pods = [
    {
      metadata: {
        name: "a",
        namespace: "ns",
        resourceVersion: "1",
        managedFields,
        annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}", keep: "yes" },
      },
    },
  ];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.searchParams.get("watch") !== "true") {
      lists++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          kind: "PodList",
          apiVersion: "v1",
          metadata: { resourceVersion: String(lists * 10) },
          items: pods,
        }),
      );
      return;
    }
    watches++;
    if (watches === 1) {
      res.writeHead(200, { "content-type": "application/json" });
      res.write("");
      setTimeout(() => res.socket?.destroy(), 50); // connection dropped
      return;
    }
    if (watches === 2) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          type: "ERROR",
          object: { kind: "Status", code: 410, reason: "Expired", message: "too old resource version" },
        }) + "\n",
      );
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.write(
      JSON.stringify({
        type: "ADDED",
        object: { metadata: { name: "b", namespace: "ns", resourceVersion: "99", managedFields } },
      }) + "\n",
    );
  });
  return { server, stats: () => ({ lists, watches }) };
}

describe("startInformer", () => {
  let server: Server;
  afterEach(() => {
    server?.closeAllConnections();
    server?.close();
  });

  /** An informer over the fake apiserver's pods, stopped once it has watched pod "b". */
  const untilWatched = async (opts: { identityOnly?: boolean }) => {
    const fake = fakeApiserver();
    server = fake.server;
    const kc = await listenAndConnect(server);
    const informer = startInformer<KubernetesObject>(
      kc,
      "/api/v1/pods",
      async () => (await (await fetch(`${kc.getCurrentCluster()!.server}/api/v1/pods`)).json()) as never,
      {},
      { backoff: new Backoff({ initialMs: 10, maxMs: 50 }), ...opts },
    );
    const deadline = Date.now() + 8000;
    const named = (name: string) => informer.list().find((o) => o.metadata?.name === name);
    while (!named("b") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await informer.stop();
    return { fake, named };
  };

  it("keeps watching through dropped connections and 410 Gone, relisting, until stopped", async () => {
    const fake = fakeApiserver();
    server = fake.server;
    const kc = await listenAndConnect(server);
    const errors: unknown[] = [];
    const seen: string[] = [];
    const informer = startInformer<{ metadata: { name: string; namespace: string } }>(
      kc,
      "/api/v1/pods",
      async () => {
        const res = await fetch(`${kc.getCurrentCluster()!.server}/api/v1/pods`);
        return (await res.json()) as never;
      },
      { add: (p) => seen.push(p.metadata.name), error: (e) => errors.push(e) },
      { backoff: new Backoff({ initialMs: 10, maxMs: 50 }) },
    );
    await informer.synced;
    const deadline = Date.now() + 5000;
    while (!seen.includes("b") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await informer.stop();
    expect(seen).to.include.members(["a", "b"]);
    expect(fake.stats().watches).to.be.at.least(3);
    expect(fake.stats().lists, "relisted after the 410").to.be.at.least(2);
    expect(
      informer
        .list()
        .map((p) => p.metadata.name)
        .sort(),
    ).to.deep.equal(["a", "b"]);
  });

  it("caches objects without managedFields and kubectl's last-applied copy, keeping other annotations", async () => {
    const { named } = await untilWatched({});
    const [a, b] = [named("a"), named("b")];
    expect(a?.metadata?.managedFields, "listed").to.equal(undefined);
    expect(a?.metadata?.annotations).to.deep.equal({ keep: "yes" });
    expect(b, "watched").to.not.equal(undefined);
    expect(b?.metadata?.managedFields, "watched").to.equal(undefined);
  });

  it("with identityOnly keeps each object's name, namespace and resourceVersion only, and still relists after 410 Gone", async () => {
    const { fake, named } = await untilWatched({ identityOnly: true });
    expect(fake.stats().lists, "the 410 Status reached the informer whole: it relisted").to.be.at.least(2);
    expect(named("a")).to.deep.equal({
      apiVersion: undefined,
      kind: undefined,
      metadata: { name: "a", namespace: "ns", uid: undefined, resourceVersion: "1" },
    });
    expect(named("b")?.metadata).to.deep.equal({
      name: "b",
      namespace: "ns",
      uid: undefined,
      resourceVersion: "99",
    });
  });

  it("lists a large collection page by page and caches every object of every page, reduced", async () => {
    const fake = fakeApiserver();
    server = fake.server;
    const kc = await listenAndConnect(server);
    const total = 2 * LIST_PAGE_SIZE + 7;
    const asked: ListPage[] = [];
    const informer = startInformer<KubernetesObject>(
      kc,
      "/api/v1/pods",
      async (page) => {
        asked.push(page);
        const from = Number(page.continue ?? 0);
        const to = Math.min(total, from + (page.limit ?? total));
        const items = Array.from({ length: to - from }, (_, i) => ({
          metadata: {
            name: `p${from + i}`,
            namespace: "ns",
            resourceVersion: "5",
            managedFields: [{ manager: "kubectl", operation: "Apply" }],
          },
        }));
        return {
          metadata: { resourceVersion: "5", ...(to < total ? { continue: String(to) } : {}) },
          items,
        };
      },
      {},
      { backoff: new Backoff({ initialMs: 10, maxMs: 50 }) },
    );
    await informer.synced;
    const cached = informer.list();
    await informer.stop();
    expect(asked).to.deep.equal([
      { limit: LIST_PAGE_SIZE },
      { limit: LIST_PAGE_SIZE, continue: String(LIST_PAGE_SIZE) },
      { limit: LIST_PAGE_SIZE, continue: String(2 * LIST_PAGE_SIZE) },
    ]);
    expect(cached.filter((o) => o.metadata?.name?.startsWith("p"))).to.have.length(total);
    expect(cached.every((o) => o.metadata?.managedFields === undefined)).to.equal(true);
  });

  it("lists everything at once when a page's continue token has expired, and caches each object once", async () => {
    const fake = fakeApiserver();
    server = fake.server;
    const kc = await listenAndConnect(server);
    const total = LIST_PAGE_SIZE + 3;
    const asked: ListPage[] = [];
    const pods = Array.from({ length: total }, (_, i) => ({
      metadata: { name: `p${i}`, namespace: "ns", resourceVersion: "5" },
    }));
    const informer = startInformer<KubernetesObject>(
      kc,
      "/api/v1/pods",
      async (page) => {
        asked.push(page);
        if (page.continue)
          throw Object.assign(new Error("the provided continue parameter is too old"), { statusCode: 410 });
        const items = page.limit === undefined ? pods : pods.slice(0, page.limit);
        return {
          metadata: { resourceVersion: "5", ...(page.limit ? { continue: "x" } : {}) },
          items,
        };
      },
      {},
      { backoff: new Backoff({ initialMs: 10, maxMs: 50 }) },
    );
    await informer.synced;
    const cached = informer.list().filter((o) => o.metadata?.name?.startsWith("p"));
    await informer.stop();
    expect(asked).to.deep.equal([{ limit: LIST_PAGE_SIZE }, { limit: LIST_PAGE_SIZE, continue: "x" }, {}]);
    expect(cached).to.have.length(total);
  });

  it("stops a list whose continue token does not move on, with an error, instead of filling the heap", async () => {
    const fake = fakeApiserver();
    server = fake.server;
    const kc = await listenAndConnect(server);
    const errors: unknown[] = [];
    let pages = 0;
    const informer = startInformer<KubernetesObject>(
      kc,
      "/api/v1/pods",
      async () => {
        pages++;
        return {
          metadata: { resourceVersion: "5", continue: "same" },
          items: [{ metadata: { name: "p" } }],
        } as never;
      },
      { error: (err) => errors.push(err) },
      { backoff: new Backoff({ initialMs: 1000, maxMs: 1000 }) },
    );
    const deadline = Date.now() + 5000;
    while (errors.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await informer.stop();
    expect(String(errors[0])).to.include("the same continue token twice");
    expect(pages).to.equal(2);
  });
});
