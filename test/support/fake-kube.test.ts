import { expect } from "chai";
import { KubeApiError } from "../../src/k8s/client.js";
import { FakeKube, mergePatch } from "./fake-kube.js";

const CM = "/api/v1/namespaces/shop/configmaps";
const status = (p: Promise<unknown>) =>
  p.then(
    () => 200,
    (e: unknown) => (e instanceof KubeApiError ? e.statusCode : -1),
  );

describe("FakeKube (the unit tests' apiserver)", () => {
  it("keeps the apiserver's rules: 409 on create of an existing object and on a stale replace, 404 when missing", async () => {
    const kube = new FakeKube();
    const created = await kube.create(CM, { metadata: { name: "a" }, data: { x: "1" } });
    expect(created.metadata).to.include({ name: "a", namespace: "shop", resourceVersion: "1" });
    expect(await status(kube.create(CM, { metadata: { name: "a" } }))).to.equal(409);
    expect(await status(kube.replace(`${CM}/a`, { metadata: { resourceVersion: "1" }, data: {} }))).to.equal(
      200,
    );
    expect(await status(kube.replace(`${CM}/a`, { metadata: { resourceVersion: "1" }, data: {} }))).to.equal(
      409,
    );
    expect(await status(kube.get(`${CM}/b`))).to.equal(404);
    expect(await kube.delete(`${CM}/a`)).to.equal(true);
    expect(await kube.delete(`${CM}/a`)).to.equal(false);
  });

  it("merges patches as RFC 7386 says: null removes, objects merge, arrays replace", () => {
    expect(
      mergePatch({ a: 1, b: { c: 2, d: 3 }, e: [1, 2] }, { a: null, b: { c: 5 }, e: [3] }),
    ).to.deep.equal({
      b: { c: 5, d: 3 },
      e: [3],
    });
  });

  it("fails the next matching call when told to, once", async () => {
    const kube = new FakeKube();
    kube.failNext(500, { method: "create" });
    expect(await status(kube.create(CM, { metadata: { name: "a" } }))).to.equal(500);
    expect(await status(kube.create(CM, { metadata: { name: "a" } }))).to.equal(200);
    expect(kube.calls.map((c) => c.method)).to.deep.equal(["create", "create"]);
  });
});
