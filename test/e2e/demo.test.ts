import { join } from "node:path";
import { expect } from "chai";
import { runDemo } from "../../tools/demo/demo.js";
import { ROOT, useCluster } from "../support/cluster.js";

describe("npm run demo (e2e)", function () {
  this.timeout(10 * 60_000);

  it("runs Governor as its own process and the real HPA scales the sample app up under load and back down", async function () {
    this.timeout(60 * 60_000);
    const cluster = await useCluster(); // share the run's control plane (and its first-time build)
    const lines: string[] = [];
    const ok = await runDemo({
      governorCommand: [process.execPath, "--import", "tsx", join(ROOT, "src/main.ts")],
      out: (line) => lines.push(line),
      env: process.env,
      phases: [
        [10, 5],
        [40, 45],
        [25, 5],
      ],
    });
    const output = lines.join("\n");
    expect(ok, output).to.equal(true);
    expect(output).to.match(/v1beta2\.custom\.metrics\.k8s\.io\s+governor-demo-system\/governor\s+True/);
    expect(output).to.contain("The HPA scaled the ScalableWorkload up to");
    // Cleaned up means gone, not Terminating with a pod no kubelet confirms any more.
    for (const ns of ["governor-demo", "governor-demo-system"])
      expect(await cluster.client.getOrUndefined(`/api/v1/namespaces/${ns}`), ns).to.equal(undefined);
  });
});
