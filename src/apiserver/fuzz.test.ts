import { expect } from "chai";
import { GovernorError } from "../errors.js";
import { FakeProvider } from "../../test/support/fake-provider.js";
import { LabelSelector } from "../selectors/label-selector.js";
import { MetricsApi } from "./metrics-api.js";
import { JsonText } from "./wire.js";

/** A small seeded PRNG (mulberry32): a failure prints its seed and input, and reproduces. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  return { next, int, pick };
}

type Rand = ReturnType<typeof prng>;

const ODD = [
  "",
  " ",
  "\t",
  "\n",
  "\u0000",
  "\u00e9",
  "\u{1F600}",
  "\ud800",
  "%",
  "%2",
  "%zz",
  "%2e",
  "%2F",
  "..",
  ".",
  "\\",
  "?",
  "#",
  "&",
  "=",
  "*",
  "~",
  "$",
  "'",
  '"',
  "<",
  ">",
];

/** A string from `alphabet` and odd characters, sometimes very long. */
function junk(r: Rand, alphabet = "abcXYZ019-_./"): string {
  const len = r.next() < 0.02 ? 2000 + r.int(70_000) : r.int(12);
  let s = "";
  for (let i = 0; i < len; i++) s += r.next() < 0.15 ? r.pick(ODD) : alphabet[r.int(alphabet.length)]!;
  return s;
}

const KEYS = ["app", "tier", "example.com/team", "a.b/c", "x", "-bad", "k".repeat(64), "UPPER", ""];
const VALUES = ["web", "", "v1", "a-b_c.d", "-x", "v".repeat(64), "0"];
const OPS = ["=", "==", "!=", " in ", " notin ", ">", "<", "!", ""];

/** Selector-shaped text: requirements of keys, operators and value sets, then mutated. */
function selectorText(r: Rand): string {
  const parts: string[] = [];
  for (let i = 0, n = r.int(5); i < n; i++) {
    const key = r.next() < 0.8 ? r.pick(KEYS) : junk(r);
    const op = r.pick(OPS);
    const value =
      op.trim() === "in" || op.trim() === "notin"
        ? `(${Array.from({ length: r.int(4) }, () => r.pick(VALUES)).join(",")}${r.next() < 0.1 ? "" : ")"}`
        : r.next() < 0.85
          ? r.pick(VALUES)
          : junk(r);
    parts.push(op === "!" ? `!${key}` : `${key}${op}${op ? value : ""}`);
  }
  let text = parts.join(r.next() < 0.9 ? "," : r.pick([" ", ",,", ", ", ";"]));
  // Mutations: insert, delete or replace a character.
  for (let m = r.int(3); m > 0 && text.length; m--) {
    const at = r.int(text.length);
    const op = r.int(3);
    text =
      op === 0
        ? text.slice(0, at) + r.pick(ODD) + text.slice(at)
        : op === 1
          ? text.slice(0, at) + text.slice(at + 1)
          : text.slice(0, at) + junk(r, "(),=!<> ") + text.slice(at + 1);
  }
  return text;
}

const SEGMENTS = [
  "apis",
  "custom.metrics.k8s.io",
  "external.metrics.k8s.io",
  "v1beta1",
  "v1beta2",
  "namespaces",
  "shop",
  "pods",
  "*",
  "web-1",
  "http_requests",
  "metrics",
  "deployments.apps",
  "services",
  "openapi",
  "v2",
  "v3",
  "healthz",
];

const WELL_FORMED = [
  "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/pods/*/http_requests",
  "/apis/custom.metrics.k8s.io/v1beta1/namespaces/shop/pods/web-1/http_requests",
  "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/deployments.apps/web/http_requests",
  "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/metrics/http_requests",
  "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/http_requests",
  "/apis/custom.metrics.k8s.io/v1beta2",
  "/apis",
];

/**
 * A request target: half well-formed metric paths (so the query parameters reach the
 * handlers), half metrics-API-shaped paths with junk segments; query parameters from the
 * selector generator.
 */
function target(r: Rand): { pathname: string; searchParams: URLSearchParams } {
  let pathname: string;
  if (r.next() < 0.5) pathname = r.pick(WELL_FORMED);
  else {
    const segs = [
      "apis",
      r.pick(["custom.metrics.k8s.io", "external.metrics.k8s.io", "x"]),
      r.pick(["v1beta1", "v1beta2", "v1"]),
    ];
    for (let i = 0, n = r.int(6); i < n; i++)
      segs.push(r.next() < 0.75 ? r.pick(SEGMENTS) : encodeMaybe(r, junk(r)));
    if (r.next() < 0.1) segs.splice(0, r.int(segs.length));
    pathname = "/" + segs.join(r.next() < 0.95 ? "/" : "//") + (r.next() < 0.1 ? "/" : "");
  }
  const searchParams = new URLSearchParams();
  if (r.next() < 0.5) searchParams.set("labelSelector", selectorText(r));
  if (r.next() < 0.3) searchParams.set("metricLabelSelector", selectorText(r));
  if (r.next() < 0.1) searchParams.set(junk(r), junk(r));
  return { pathname, searchParams };
}

function encodeMaybe(r: Rand, s: string): string {
  if (r.next() < 0.5) return s.replace(/\//g, "");
  try {
    return encodeURIComponent(s);
  } catch {
    return s.replace(/\//g, ""); // a lone surrogate cannot be encoded: keep it raw
  }
}

const INPUTS = 100_000;

describe("fuzz: hostile input to the URL router and the label-selector parser", function () {
  this.timeout(180_000);

  it(`the label-selector parser answers ${INPUTS.toLocaleString("en")} generated selectors with a parse or a parse error, and what parses prints back to the same selector`, () => {
    const seed = 0x5e1ec7;
    const r = prng(seed);
    let parsed = 0;
    for (let i = 0; i < INPUTS; i++) {
      const text = selectorText(r);
      let selector: LabelSelector;
      try {
        selector = LabelSelector.parse(text);
      } catch (err) {
        if (err instanceof GovernorError) continue;
        throw new Error(`seed ${seed}, input #${i} ${JSON.stringify(text.slice(0, 200))}: ${String(err)}`, {
          cause: err,
        });
      }
      parsed++;
      const printed = selector.toString();
      expect(
        LabelSelector.parse(printed).toString(),
        `seed ${seed}, input #${i} ${JSON.stringify(text)}`,
      ).to.equal(printed);
    }
    // The generator must reach both outcomes, or it tests nothing.
    expect(parsed).to.be.within(INPUTS * 0.05, INPUTS * 0.95);
  });

  it(`the metrics API answers ${INPUTS.toLocaleString("en")} generated request targets with 2xx, 3xx or a 4xx Status, never a 5xx or an exception`, async () => {
    const provider = new FakeProvider();
    provider.objects.push(
      {
        groupResource: { group: "", resource: "pods" },
        object: { kind: "Pod", namespace: "shop", name: "web-1", apiVersion: "v1" },
        labels: { app: "web", tier: "front" },
        metric: "http_requests",
        value: "5",
      },
      {
        groupResource: { group: "apps", resource: "deployments" },
        object: { kind: "Deployment", namespace: "shop", name: "web", apiVersion: "apps/v1" },
        metric: "http_requests",
        value: "7",
      },
    );
    provider.external.push({
      namespace: "shop",
      metric: "http_requests",
      value: "3",
      labels: { queue: "a" },
    });
    const api = new MetricsApi(provider);
    const seed = 0xa91;
    const r = prng(seed);
    const statuses = new Map<number, number>();
    for (let i = 0; i < INPUTS; i++) {
      const t = target(r);
      const method =
        r.next() < 0.9 ? "GET" : r.pick(["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get"]);
      const accept = r.pick([
        undefined,
        "application/json",
        "*/*",
        "application/vnd.kubernetes.protobuf",
        junk(r),
      ]);
      const res = await api.handle(method, t, accept);
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const where = `seed ${seed}, input #${i}: ${method} ${t.pathname.slice(0, 200)}?${t.searchParams.toString().slice(0, 200)}`;
      expect(res.status, `${where} (cause: ${String(res.cause)})`).to.be.below(500);
      if (res.status >= 400) {
        const body = (res.body instanceof JsonText ? JSON.parse(res.body.text) : res.body) as {
          kind: string;
          code: number;
        };
        expect(body.kind, where).to.equal("Status");
        expect(body.code, where).to.equal(res.status);
      }
    }
    console.log(
      `      [figures] status codes over ${INPUTS} inputs: ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`,
    );
    // Both served answers and refusals were reached.
    expect(
      [...statuses.keys()].some((s) => s < 300),
      JSON.stringify([...statuses]),
    ).to.equal(true);
    expect(
      [...statuses.keys()].some((s) => s >= 400),
      JSON.stringify([...statuses]),
    ).to.equal(true);
  });
});
