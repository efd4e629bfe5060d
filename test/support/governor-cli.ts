/**
 * Runs the `governor` CLI from the checkout's sources, as a user runs `npx governor …`,
 * against a test cluster: exit code, stdout and stderr.
 */
import { execFile, spawnSync } from "node:child_process";
import { join } from "node:path";
import { ROOT, type TestCluster } from "./cluster.js";

const command = (args: readonly string[]) => ["--import", "tsx", join(ROOT, "src/main.ts"), ...args];
const options = (cluster: TestCluster) => ({
  cwd: ROOT,
  env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
  encoding: "utf8" as const,
  timeout: 60_000,
});

export function governorCli(
  cluster: TestCluster,
  ...args: string[]
): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, command(args), options(cluster));
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/**
 * The same, leaving this process's event loop free: for a test that itself serves what the
 * command's answer depends on (a source, a scrape target).
 */
export function governorCliAsync(
  cluster: TestCluster,
  ...args: string[]
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, command(args), options(cluster), (err, out, errOut) =>
      resolve({ code: typeof err?.code === "number" ? err.code : err ? -1 : 0, out, err: errOut }),
    ),
  );
}
