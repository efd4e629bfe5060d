/**
 * config/prometheus: the PrometheusRule's alerts pass `promtool check rules` and fire as
 * `promtool test rules` expects (prometheus-rule.test.yaml); the Grafana dashboard's
 * queries are valid PromQL; the ServiceMonitor selects the metrics Service, which selects
 * Governor's pods on its `metrics` port. promtool is built from the Prometheus module
 * (hack/prometheus.sh promtool). That every Governor metric they name is exported is
 * checked against a running Governor (test/integration/governor-run.test.ts).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { parseAllDocuments, stringify } from "yaml";
import { ROOT } from "../support/cluster.js";
import { dashboardQueries, ruleGroups } from "../support/monitoring.js";

const DIR = join(ROOT, "config/prometheus");

describe("config/prometheus: alerts, dashboard and ServiceMonitor", function () {
  this.timeout(30 * 60_000); // promtool is built the first time
  let promtool: string;
  let dir: string;

  before(function () {
    promtool = execFileSync("bash", [join(ROOT, "hack/prometheus.sh"), "promtool"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
    }).trim();
    dir = mkdtempSync(join(tmpdir(), "governor-rules-"));
    writeFileSync(join(dir, "rules.yaml"), stringify({ groups: ruleGroups() }));
    copyFileSync(join(DIR, "prometheus-rule.test.yaml"), join(dir, "prometheus-rule.test.yaml"));
  });

  const run = (...args: string[]) => spawnSync(promtool, args, { cwd: dir, encoding: "utf8" });

  it("has alerts that promtool checks: APIService unavailable, Governor down, no leader, mappings not Ready, source errors, certificate expiring", () => {
    const r = run("check", "rules", "rules.yaml");
    expect(r.status, r.stdout + r.stderr).to.equal(0);
    expect(ruleGroups().flatMap((g) => g.rules.map((x) => x.alert))).to.deep.equal([
      "GovernorAPIServiceUnavailable",
      "GovernorDown",
      "GovernorNoLeader",
      "GovernorMetricMappingsNotReady",
      "GovernorSourceErrors",
      "GovernorCertificateExpiringSoon",
    ]);
  });

  it("fires each alert on what it is about, after its for: and not before (promtool test rules)", () => {
    const r = run("test", "rules", "prometheus-rule.test.yaml");
    expect(r.status, r.stdout + r.stderr).to.equal(0);
    expect(r.stdout).to.contain("SUCCESS");
  });

  it("has a Grafana dashboard whose every query is valid PromQL", () => {
    const queries = dashboardQueries();
    expect(queries.length).to.be.greaterThan(5);
    const file = join(dir, "dashboard-queries.yaml");
    writeFileSync(
      file,
      stringify({
        groups: [
          {
            name: "dashboard",
            rules: queries.map((expr, i) => ({ record: `governor:dashboard:${i}`, expr })),
          },
        ],
      }),
    );
    const r = run("check", "rules", file);
    expect(r.status, r.stdout + r.stderr).to.equal(0);
  });

  it("has a ServiceMonitor that selects the metrics Service, which selects Governor's pods on their metrics port", () => {
    const objects = parseAllDocuments(execFileSync("kubectl", ["kustomize", DIR], { encoding: "utf8" })).map(
      (d) =>
        d.toJS() as {
          kind: string;
          metadata: { labels?: Record<string, string> };
          spec: Record<string, unknown>;
        },
    );
    const service = objects.find((o) => o.kind === "Service")!;
    const monitor = objects.find((o) => o.kind === "ServiceMonitor")!;
    const selected = (monitor.spec.selector as { matchLabels: Record<string, string> }).matchLabels;
    for (const [k, v] of Object.entries(selected)) expect(service.metadata.labels?.[k]).to.equal(v);
    const deployment = parseAllDocuments(readFileSync(join(ROOT, "config/manager/deployment.yaml"), "utf8"))
      .map(
        (d) =>
          d.toJS() as { kind: string; spec: { template: { metadata: { labels: Record<string, string> } } } },
      )
      .find((o) => o.kind === "Deployment")!;
    expect(deployment.spec.template.metadata.labels).to.include(service.spec.selector);
    expect((monitor.spec.endpoints as { port: string }[])[0]!.port).to.equal("metrics");
  });
});
