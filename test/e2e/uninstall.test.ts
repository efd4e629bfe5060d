/**
 * docs/install.md's Uninstall section, followed literally for the local install: Governor runs
 * as its own process (as `config/local` describes), then `npm run --silent governor --
 * uninstall` and `kubectl delete -k config/local`. Nothing may be left behind, and the
 * namespace must not hang in Terminating.
 */
import { spawnSync } from "node:child_process";
import { expect } from "chai";
import { ROOT, kubectl, type TestCluster, useCluster } from "../support/cluster.js";
import { eventually } from "../support/eventually.js";
import { GovernorProcess } from "../support/governor-process.js";

const APISERVICES = [
  "v1beta1.custom.metrics.k8s.io",
  "v1beta2.custom.metrics.k8s.io",
  "v1beta1.external.metrics.k8s.io",
];

describe("uninstall as docs/install.md says (e2e)", function () {
  this.timeout(240_000);
  let cluster: TestCluster;
  let governor: GovernorProcess;

  /** The documented command, run from the checkout with the admin kubeconfig. */
  const readmeUninstall = () =>
    spawnSync("npm", ["run", "--silent", "governor", "--", "uninstall"], {
      cwd: ROOT,
      env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
      encoding: "utf8",
    });
  const apiServices = async () => {
    const names = await kubectl(cluster, "get", "apiservices", "-o", "name");
    return APISERVICES.filter((a) => names.includes(`apiservice.apiregistration.k8s.io/${a}`));
  };

  before(async function () {
    this.timeout(240_000);
    cluster = await useCluster();
    governor = new GovernorProcess(cluster);
    await governor.start();
  });
  after(async () => {
    await governor?.terminate();
  });

  it("refuses while Governor runs, because it would register again", async () => {
    const r = readmeUninstall();
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/a Governor is still running in governor-system .*Stop it first/);
    expect(await apiServices()).to.deep.equal(APISERVICES);
  });

  it("once Governor is stopped, removes exactly what is there and reports it; then nothing", async () => {
    await governor.terminate();
    const first = readmeUninstall();
    expect(first.status, first.stderr).to.equal(0);
    expect(first.stdout.trim().split("\n").sort()).to.deep.equal(
      [
        ...APISERVICES.map((a) => `removed apiservice/${a}`),
        "removed secret/governor-serving-cert",
        "removed service/governor",
      ].sort(),
    );
    expect(await apiServices()).to.deep.equal([]);
    const second = readmeUninstall();
    expect(second.status).to.equal(0);
    expect(second.stdout.trim()).to.equal("nothing to remove");
  });

  it("then kubectl delete -k config/local removes the namespace without hanging", async () => {
    const started = Date.now();
    await kubectl(cluster, "delete", "-k", `${ROOT}config/local`, "--wait=false");
    await eventually(
      async () => {
        const ns = await cluster.client.getOrUndefined<{
          status?: { conditions?: { type: string; status: string; message: string }[] };
        }>("/api/v1/namespaces/governor-system");
        const stuck = ns?.status?.conditions?.find((c) => c.status === "True" && /Failure/.test(c.type));
        if (stuck) throw new Error(`${stuck.type}: ${stuck.message}`);
        if (ns) throw new Error("still there");
        for (const crd of ["metricmappings.governor.dev", "scalableworkloads.governor.dev"])
          if (
            await cluster.client.getOrUndefined(
              `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd}`,
            )
          )
            throw new Error(`CRD ${crd} still there`);
      },
      { timeoutMs: 90_000, intervalMs: 250, what: "namespace governor-system and the CRDs gone" },
    );
    console.log(`      governor-system deleted in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    expect(await apiServices()).to.deep.equal([]);
  });
});
