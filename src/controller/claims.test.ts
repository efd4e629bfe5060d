import type { KubernetesObject } from "@kubernetes/client-node";
import { expect } from "chai";
import type { MetricMappingSpec } from "../sources/registry.js";
import type { ResourceMapper } from "../k8s/resource-mapper.js";
import { ClaimIndex, oldest, resolveClaim } from "./claims.js";

const mapper = (known: Record<string, { namespaced: boolean } | Error>): ResourceMapper =>
  ({
    lookup: async (gr: { group: string; resource: string }) => {
      const r = known[`${gr.resource}.${gr.group}`];
      if (r instanceof Error) throw r;
      return r && { ...r, kind: "X", apiVersion: "v1" };
    },
  }) as unknown as ResourceMapper;
const spec = (subject: MetricMappingSpec["subject"]) => ({ metric: "rps", subject }) as MetricMappingSpec;
/** A mapping as the informer holds it: timestamps as the apiserver's RFC 3339 text. */
const obj = (name: string, created: string, deleting = false) =>
  ({
    metadata: { name, creationTimestamp: created, ...(deleting ? { deletionTimestamp: created } : {}) },
  }) as unknown as KubernetesObject;

describe("MetricMapping claims", () => {
  it("claims a namespaced resource's metric, and an external metric by name", async () => {
    const m = mapper({ "deployments.apps": { namespaced: true } });
    expect(await resolveClaim(m, spec({ resource: "deployments.apps" }))).to.include({
      id: "resource|deployments.apps|rps",
    });
    expect(await resolveClaim(m, spec({ external: {} }))).to.include({ id: "external|rps" });
  });

  const refusals: [string, Record<string, { namespaced: boolean } | Error>, string, string][] = [
    ["a resource the cluster does not serve", {}, "widgets.example.com", "UnknownResource"],
    ["a cluster-scoped resource", { "nodes.": { namespaced: false } }, "nodes", "ClusterScopedSubject"],
    ["a resource discovery failed for", { "pods.": new Error("503") }, "pods", "DiscoveryFailed"],
  ];
  for (const [what, known, resource, reason] of refusals)
    it(`refuses ${what} as ${reason}`, async () => {
      expect(await resolveClaim(mapper(known), spec({ resource }))).to.include({ reason });
    });

  it("accepts namespaces, cluster-scoped as they are, as a subject", async () => {
    const claim = await resolveClaim(
      mapper({ "namespaces.": { namespaced: false } }),
      spec({ resource: "namespaces" }),
    );
    expect(claim).to.include({ id: "resource|namespaces.|rps" });
  });

  it("tells which other mappings to look at again when a claim moves, and nobody when it does not", () => {
    const claims = new ClaimIndex();
    expect(claims.set("shop/a", "shop", "external|rps")).to.deep.equal([]);
    expect(claims.set("shop/b", "shop", "external|rps")).to.deep.equal(["shop/a"]);
    expect(claims.set("shop/b", "shop", "external|rps")).to.deep.equal([]);
    expect(claims.set("web/c", "web", "external|rps"), "another namespace is another claim").to.deep.equal(
      [],
    );
    expect(claims.set("shop/a", "shop", undefined)).to.deep.equal(["shop/b"]);
    expect(claims.claiming("shop", "external|rps")).to.deep.equal(["shop/b"]);
  });

  it("keeps every rival of a claim as rivals come and go, down to none and back", () => {
    const claims = new ClaimIndex();
    claims.set("shop/a", "shop", "external|rps");
    claims.set("shop/b", "shop", "external|rps");
    expect(claims.set("shop/c", "shop", "external|rps")).to.have.members(["shop/a", "shop/b"]);
    expect(claims.set("shop/b", "shop", "external|other")).to.have.members(["shop/a", "shop/c"]);
    expect(claims.claiming("shop", "external|rps")).to.have.members(["shop/a", "shop/c"]);
    expect(claims.set("shop/a", "shop", undefined)).to.deep.equal(["shop/c"]);
    expect(claims.claiming("shop", "external|rps")).to.deep.equal(["shop/c"]);
    expect(claims.set("shop/c", "shop", undefined)).to.deep.equal([]);
    expect(claims.claiming("shop", "external|rps")).to.deep.equal([]);
    expect(claims.set("shop/a", "shop", "external|rps"), "a claim emptied is a claim anew").to.deep.equal([]);
    expect(claims.claiming("shop", "external|other")).to.deep.equal(["shop/b"]);
  });

  it("serves the oldest claimant, by name on a tie, never one being deleted", () => {
    const a = obj("a", "2026-12-01T10:00:00Z");
    const b = obj("b", "2026-12-01T09:00:00Z");
    const c = obj("c", "2026-12-01T09:00:00Z");
    const gone = obj("old", "2026-11-01T00:00:00Z", true);
    expect(oldest([a, c, b, gone, undefined])).to.equal(b);
  });
});
