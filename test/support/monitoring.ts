/** What config/prometheus holds, for the tests that check it. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { ROOT } from "./cluster.js";

const DIR = join(ROOT, "config/prometheus");

/** The rule groups of config/prometheus/prometheus-rule.yaml. */
export function ruleGroups(): { name: string; rules: { alert?: string; expr: string }[] }[] {
  const rule = parse(readFileSync(join(DIR, "prometheus-rule.yaml"), "utf8")) as {
    spec: { groups: { name: string; rules: { alert?: string; expr: string }[] }[] };
  };
  return rule.spec.groups;
}

/** The PromQL of every panel of config/prometheus/grafana-dashboard.json. */
export function dashboardQueries(): string[] {
  const dashboard = JSON.parse(readFileSync(join(DIR, "grafana-dashboard.json"), "utf8")) as {
    panels: { targets?: { expr: string }[] }[];
  };
  return dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
}

/** Every `governor_*` metric the alerts and the dashboard name (histograms by their base name). */
export function governorMetricsUsed(): string[] {
  const text = [...ruleGroups().flatMap((g) => g.rules.map((r) => r.expr)), ...dashboardQueries()].join("\n");
  const names = [...text.matchAll(/\bgovernor_[a-z_]+/g)].map((m) =>
    m[0].replace(/_(bucket|sum|count)$/, ""),
  );
  return [...new Set(names)].sort();
}
