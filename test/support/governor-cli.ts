/**
 * Runs the `governor` CLI from the checkout's sources, as a user runs `npx governor …`,
 * against a test cluster: exit code, stdout and stderr.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { ROOT, type TestCluster } from "./cluster.js";

export function governorCli(
  cluster: TestCluster,
  ...args: string[]
): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", join(ROOT, "src/main.ts"), ...args], {
    cwd: ROOT,
    env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
