/**
 * `npm run demo [-- --in-cluster]`: runs the demo (demo.ts) from a checkout, starting
 * Governor from this checkout's sources as `governor run`. Exits 0 when the HPA scaled the
 * sample app up and back down.
 */
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { runDemo } from "./demo.js";

const main = fileURLToPath(new URL("../../src/main.ts", import.meta.url));
const opts = new Command("demo")
  .description("Governor, a sample app and the real HPA scaling it, on the local control plane.")
  .option(
    "--in-cluster",
    "install Governor as users do (kubectl apply -k config/default: two replicas as real pods on the node agent's Nodes; needs root)",
  )
  .parse()
  .opts<{ inCluster?: boolean }>();

const ok = await runDemo({
  governorCommand: [process.execPath, "--import", "tsx", main],
  out: (line) => console.log(line),
  env: process.env,
  inCluster: opts.inCluster === true,
});
process.exitCode = ok ? 0 : 1;
