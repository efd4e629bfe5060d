import { pino } from "pino";
import { startOperator } from "./src/app/operator.js";
import { freshNamespace, useCluster, kubectl } from "./test/support/cluster.js";
import { freePort } from "./test/support/ports.js";
describe("dbg", function () {
  this.timeout(60000);
  it("x", async () => {
    const cluster = await useCluster();
    const ns = await freshNamespace(cluster, "dbg");
    const port = await freePort();
    const op = await startOperator({
      client: cluster.client,
      logger: pino({ level: "silent" }),
      namespace: ns.name,
      registration: { mode: "local", serviceName: "gdbg", port, resyncMs: 1000, caPropagationMs: 3000 },
      host: "127.0.0.1",
      port,
      apis: { custom: true, external: true },
      leaderElect: false,
      shutdownDelayMs: 0,
    });
    await new Promise((r) => setTimeout(r, 2000));
    op.registration!.requestRotation({ ca: true });
    for (let i = 0; i < 14; i++) {
      await new Promise((r) => setTimeout(r, 700));
      const st = await kubectl(
        cluster,
        "get",
        "apiservice",
        "v1beta2.custom.metrics.k8s.io",
        "-o",
        "jsonpath={.status.conditions[0].status} {.status.conditions[0].message}",
      );
      const raw = await kubectl(cluster, "get", "--raw", "/apis/custom.metrics.k8s.io/v1beta2")
        .then(() => "OK")
        .catch((e: Error) => e.message.slice(0, 120));
      console.log(i, st, "|", raw);
    }
    await op.stop();
    await op.registration?.uninstall();
    await ns.delete();
  });
});
