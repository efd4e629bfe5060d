import { expect } from "chai";
import { z } from "zod";
import { buildCRD } from "../../hack/crd.js";
import { defineSource } from "./kind.js";
import {
  MetricMappingKind,
  MetricMappingSpec,
  SOURCES,
  buildSource,
  mappingKindWith,
  rateWindowMs,
} from "./registry.js";
import { StaticSource } from "./static.js";

type Node = {
  properties?: Record<string, Node>;
  enum?: string[];
  "x-kubernetes-validations"?: { rule: string }[];
};
const rules = (n: Node) => (n["x-kubernetes-validations"] ?? []).map((r) => r.rule);

/** A kind that is only ever a definition: what adding a source takes. */
const gauge = defineSource({
  kind: "gauge",
  schema: z.object({ reading: z.number().min(0) }).meta({ description: "A reading." }),
  subject: { resource: "nodes", message: "the gauge source reads nodes: set subject.resource to nodes" },
  build: (spec) => new StaticSource({ value: String(spec.reading) }),
  rateWindowMs: (_spec, intervalMs) => 2 * intervalMs,
});

describe("source kinds (src/sources/registry.ts)", () => {
  it("a kind added to the list is in the CRD, its admission rules, status and the spec's checks — nothing else to touch", () => {
    const kind = mappingKindWith({ ...SOURCES, gauge });
    const schema = buildCRD(kind).spec.versions[0]!.schema.openAPIV3Schema as Node;
    const spec = schema.properties!.spec!;
    expect(spec.properties!.source!.properties!.gauge!.properties).to.have.keys("reading");
    expect(rules(spec.properties!.source!)[0]).to.contain("has(self.gauge)");
    expect(rules(spec)).to.include(
      "!has(self.source.gauge) || (has(self.subject.resource) && self.subject.resource == 'nodes')",
    );
    expect(schema.properties!.status!.properties!.source!.enum).to.include("gauge");

    const mapping = (resource: string) => ({
      metric: "load",
      subject: { resource },
      source: { gauge: { reading: 3 } },
    });
    expect(kind.spec.safeParse(mapping("nodes")).success).to.equal(true);
    const onPods = kind.spec.safeParse(mapping("pods"));
    expect(onPods.success).to.equal(false);
    expect(onPods.error!.issues.map((i) => `${i.path.join(".")}: ${i.message}`)).to.deep.equal([
      "source.gauge: the gauge source reads nodes: set subject.resource to nodes",
    ]);
    const two = kind.spec.safeParse({
      ...mapping("nodes"),
      source: { gauge: { reading: 3 }, static: { value: "1" } },
    });
    expect(two.error!.issues[0]!.message).to.match(/^source: set exactly one of prometheus, .*, gauge$/);
  });

  it("the CRD offers the nine source kinds in their documented order", () => {
    const schema = buildCRD(MetricMappingKind).spec.versions[0]!.schema.openAPIV3Schema as Node;
    const order = [
      "prometheus",
      "scrape",
      "http",
      "kubernetes",
      "static",
      "schedule",
      "formula",
      "forecast",
      "otlp",
    ];
    expect(Object.keys(schema.properties!.spec!.properties!.source!.properties!)).to.deep.equal(order);
    expect(schema.properties!.status!.properties!.source!.enum).to.deep.equal(order);
  });

  it("a kind listed under another name is refused when the list is built, not served under the wrong key", () => {
    expect(() => mappingKindWith({ ...SOURCES, meter: gauge })).to.throw(
      "source kind gauge is listed as meter",
    );
  });

  it("a mapping's source is built by its kind, and a scrape rate's window is one interval unless the mapping names one", async () => {
    const spec = (source: object, extra: object = {}) =>
      MetricMappingSpec.parse({ metric: "m", subject: { resource: "pods" }, source, ...extra });
    const built = buildSource(spec({ static: { value: "250m" } }), { namespace: "shop" });
    expect(await built.sample({ namespace: "shop", signal: new AbortController().signal })).to.deep.equal({
      kind: "scalar",
      value: 0.25,
    });
    const scrape = { scrape: { port: 9090, series: "requests_total", rate: true } };
    expect(rateWindowMs(spec(scrape), 15_000)).to.equal(15_000);
    expect(rateWindowMs(spec(scrape, { window: "1m" }), 15_000)).to.equal(60_000);
    expect(rateWindowMs(spec({ ...scrape, scrape: { ...scrape.scrape, rate: false } }), 15_000)).to.equal(
      undefined,
    );
    expect(rateWindowMs(spec({ static: { value: "1" } }), 15_000)).to.equal(undefined);
  });

  it("a source that needs the cluster says what it lacks instead of failing later", () => {
    const spec = MetricMappingSpec.parse({
      metric: "m",
      subject: { external: {} },
      source: { kubernetes: { count: { resource: "jobs.batch" } } },
    });
    expect(() => buildSource(spec, { namespace: "shop" })).to.throw(
      "the kubernetes source needs a Kubernetes client",
    );
  });
});
