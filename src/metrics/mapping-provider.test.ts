import { expect } from "chai";
import { FakeClock } from "../../test/support/fake-clock.js";
import { LabelSelector } from "../selectors/label-selector.js";
import type { MetricSource, SampleValue } from "../sources/source.js";
import {
  MappingProvider,
  type ActiveMapping,
  type MappingProviderOptions,
  type SubjectLister,
} from "./mapping-provider.js";
import { MetricUnavailableError } from "./provider.js";
import { formatQuantity } from "../api/quantity.js";
import { Sampler } from "./sampler.js";

/** A source whose answers the test controls, counting queries. */
class ScriptedSource implements MetricSource {
  readonly needsObjects = false;
  queries = 0;
  fail?: string;
  value = 5;
  delayMs = 0;
  async sample(): Promise<SampleValue> {
    this.queries++;
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.fail) throw new Error(this.fail);
    return { kind: "scalar", value: this.value };
  }
}

const pods: SubjectLister = {
  describe: async () => ({ kind: "Pod", apiVersion: "v1", namespaced: true }),
  list: async (_gr, _ns, sel) =>
    [
      { name: "web-1", labels: { app: "web" } },
      { name: "db-1", labels: { app: "db" } },
    ].filter((p) => sel.matches(p.labels)),
  get: async (_gr, _ns, name) => ({ name, labels: {} }),
};

describe("MappingProvider and samplers", () => {
  let now = 1_000_000;
  const clock = () => now;
  const setup = (
    extra: Partial<ActiveMapping> = {},
    subjects: SubjectLister = pods,
    opts: MappingProviderOptions = {},
  ) => {
    const source = new ScriptedSource();
    const sampler = new Sampler(source, { intervalMs: 60_000, request: () => ({ namespace: "shop" }) });
    const provider = new MappingProvider(subjects, formatQuantity, clock, opts);
    provider.activate({
      key: "shop/rps",
      namespace: "shop",
      metric: "rps",
      subject: { kind: "resource", groupResource: { group: "", resource: "pods" } },
      sampler,
      staleAfterMs: 120_000,
      ...extra,
    });
    return { source, sampler, provider };
  };
  const ask = (p: MappingProvider) =>
    p.getMetricBySelector({
      groupResource: { group: "", resource: "pods" },
      namespace: "shop",
      selector: LabelSelector.parse("app=web"),
      metric: "rps",
      metricSelector: LabelSelector.everything(),
    });

  it("leaves a mapping that took another's metric over serving when the other stops", async () => {
    const { provider, sampler } = setup(); // shop/rps serves pods/rps
    const takeover = new Sampler(new ScriptedSource(), {
      intervalMs: 60_000,
      request: () => ({ namespace: "shop" }),
    });
    const older = {
      key: "shop/older",
      namespace: "shop",
      metric: "rps",
      subject: { kind: "resource" as const, groupResource: { group: "", resource: "pods" } },
      sampler: takeover,
      staleAfterMs: 120_000,
    };
    provider.activate(older);
    expect(provider.active("shop/rps"), "the one taken over serves nothing").to.equal(undefined);
    expect(provider.deactivate("shop/rps")).to.equal(undefined);
    expect(provider.active("shop/older")).to.equal(older);
    expect(
      provider.serves({
        api: "custom",
        namespace: "shop",
        groupResource: older.subject.groupResource,
        metric: "rps",
      }),
    ).to.equal(true);
    expect(sampler).to.not.equal(takeover);
  });

  it("coalesces 100 concurrent first requests into exactly one source query", async () => {
    const { source, provider } = setup();
    source.delayMs = 50;
    const answers = await Promise.all(Array.from({ length: 100 }, () => ask(provider)));
    expect(source.queries).to.equal(1);
    expect(answers.every((a) => a.length === 1 && a[0]!.value === "5")).to.equal(true);
  });

  it("counts every request as a read, so a metric an HPA asks for is sampled at its interval", async () => {
    const clock = new FakeClock();
    const source = new ScriptedSource();
    const sampler = new Sampler(source, {
      intervalMs: 15_000,
      staleAfterMs: 120_000,
      request: () => ({ namespace: "shop" }),
      clock,
    });
    const { provider } = setup({ sampler });
    sampler.start();
    await clock.advance(130_000);
    expect(sampler.idle(), "unread for 130 s").to.equal(true);
    await ask(provider);
    expect(sampler.idle(), "just read").to.equal(false);
    await sampler.stop();
  });

  it("serves the last good value while the source fails, until staleAfter; then 503, never a 0", async () => {
    const { source, sampler, provider } = setup();
    now = 1_000_000;
    await sampler.sampleNow();
    const sampledAt = sampler.state.last!.atMs;
    now = sampledAt;
    source.fail = "connect ECONNREFUSED 10.0.0.9:9090";
    await sampler.sampleNow();
    now = sampledAt + 119_000;
    const held = await ask(provider);
    expect(held[0]!.value).to.equal("5");
    expect(held[0]!.timestamp, "the time the value was sampled").to.equal(sampledAt);
    now = sampledAt + 121_000;
    const err = await ask(provider).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(MetricUnavailableError);
    expect((err as Error).message).to.match(/is stale: last sampled 121s ago.*no fallback.*ECONNREFUSED/);
  });

  it("serves the explicit fallback once stale, and fresh values again when the source returns", async () => {
    const { source, sampler, provider } = setup({ fallback: { value: 10, text: "10" } });
    await sampler.sampleNow();
    const t = sampler.state.last!.atMs;
    source.fail = "down";
    now = t + 500_000;
    expect((await ask(provider))[0]!.value).to.equal("10");
    source.fail = undefined;
    source.value = 7;
    await sampler.sampleNow();
    now = sampler.state.last!.atMs;
    expect((await ask(provider))[0]!.value).to.equal("7");
  });

  it("answers an object metric with the same value object from its second request until the next sample or a fallback", async () => {
    const { source, sampler, provider } = setup({ fallback: { value: 10, text: "10" } });
    const one = () =>
      provider.getMetricByName({
        groupResource: { group: "", resource: "pods" },
        namespace: "shop",
        name: "web-1",
        metric: "rps",
        metricSelector: LabelSelector.everything(),
      });
    await sampler.sampleNow();
    now = sampler.state.last!.atMs;
    // A name asked for once is not kept (a flood of unique names keeps nothing)…
    const once = await one();
    const first = await one();
    expect(first, "first request of the name").to.not.equal(once);
    // …from the second request on, it is.
    expect(await one(), "unchanged sample").to.equal(first);
    source.value = 6;
    await sampler.sampleNow();
    now = sampler.state.last!.atMs;
    const next = await one();
    expect(next).to.not.equal(first);
    expect(next.value).to.equal("6");
    now += 500_000; // stale: the fallback, stamped now, is never reused
    const fallback = await one();
    expect(fallback.value).to.equal("10");
    now += 1000;
    expect(await one()).to.not.equal(fallback);
  });

  it("answers a selector with the same array from its second request until the next sample, a pod change or a fallback", async () => {
    let podsVersion = 1;
    const listed: string[] = [];
    const watched: SubjectLister = {
      ...pods,
      list: async (gr, ns, sel) => {
        listed.push(sel.toString());
        return pods.list(gr, ns, sel);
      },
      version: () => podsVersion,
    };
    const { source, sampler, provider } = setup({ fallback: { value: 10, text: "10" } }, watched);
    await sampler.sampleNow();
    now = sampler.state.last!.atMs;
    // A selector asked for once is not kept (a flood of unique selectors keeps nothing)…
    const once = await ask(provider);
    const first = await ask(provider);
    expect(first, "first request of the selector").to.not.equal(once);
    // …from the second request on, it is, and the pods are not listed again.
    listed.length = 0;
    expect(await ask(provider), "unchanged sample and pods").to.equal(first);
    expect(listed).to.deep.equal([]);
    podsVersion++; // a pod of the namespace changed
    const afterPodChange = await ask(provider);
    expect(afterPodChange).to.not.equal(first);
    expect(listed).to.deep.equal(["app=web"]);
    expect(await ask(provider)).to.equal(afterPodChange);
    source.value = 6;
    await sampler.sampleNow();
    now = sampler.state.last!.atMs;
    const next = await ask(provider);
    expect(next).to.not.equal(afterPodChange);
    expect(next[0]!.value).to.equal("6");
    now += 500_000; // stale: the fallback, stamped now, is never reused
    const fallback = await ask(provider);
    expect(fallback[0]!.value).to.equal("10");
    now += 1000;
    expect(await ask(provider)).to.not.equal(fallback);
  });

  it("builds every selector answer anew with answerCacheBytes 0", async () => {
    const watched: SubjectLister = { ...pods, version: () => 1 };
    const { sampler, provider } = setup({}, watched, { answerCacheBytes: 0 });
    await sampler.sampleNow();
    now = sampler.state.last!.atMs;
    const answers = [await ask(provider), await ask(provider), await ask(provider)];
    expect(new Set(answers).size).to.equal(3);
    expect(answers.map((a) => a.map((v) => v.value))).to.deep.equal([["5"], ["5"], ["5"]]);
  });

  it("lists a mapping in discovery while active and forgets it when deactivated", () => {
    const { provider } = setup();
    expect(provider.listCustomMetrics()).to.deep.equal([
      { groupResource: { group: "", resource: "pods" }, namespaced: true, metric: "rps" },
    ]);
    provider.deactivate("shop/rps");
    expect(provider.listCustomMetrics()).to.deep.equal([]);
  });

  it("says it serves a metric only in its mapping's namespace (elsewhere an upstream adapter answers)", () => {
    const { provider } = setup();
    const pods = { group: "", resource: "pods" };
    expect(
      provider.serves({ api: "custom", namespace: "shop", groupResource: pods, metric: "rps" }),
    ).to.equal(true);
    expect(
      provider.serves({ api: "custom", namespace: "shop", groupResource: pods, metric: "cpu" }),
    ).to.equal(false);
    expect(
      provider.serves({ api: "custom", namespace: "cart", groupResource: pods, metric: "rps" }),
    ).to.equal(false);
    expect(
      provider.serves({ api: "custom", namespace: undefined, groupResource: pods, metric: "rps" }),
    ).to.equal(false);
    expect(provider.serves({ api: "external", namespace: "shop", metric: "rps" })).to.equal(false);
  });
});
