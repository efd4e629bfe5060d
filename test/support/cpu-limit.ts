/**
 * A CPU limit for a process of a test, set the way the kubelet enforces a container's
 * `resources.limits.cpu`: a cgroup with a CFS quota (cgroup v1's `cpu.cfs_quota_us`, or
 * v2's `cpu.max`). The attack suite runs its attacker under one, as the tenant pod it
 * stands for would run (ADR 0010). Needs root and a writable cpu cgroup controller.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const PERIOD_US = 100_000;

/** Where a cgroup with a CPU quota can be made here, and how its quota is written. */
function hierarchy(): { root: string; limit: (dir: string, quotaUs: number) => void } {
  const v1 = "/sys/fs/cgroup/cpu";
  if (existsSync(join(v1, "cpu.cfs_quota_us")))
    return {
      root: v1,
      limit: (dir, quotaUs) => {
        writeFileSync(join(dir, "cpu.cfs_period_us"), String(PERIOD_US));
        writeFileSync(join(dir, "cpu.cfs_quota_us"), String(quotaUs));
      },
    };
  const v2 = "/sys/fs/cgroup";
  const controllers = join(v2, "cgroup.subtree_control");
  if (existsSync(controllers) && readFileSync(controllers, "utf8").split(/\s+/).includes("cpu"))
    return {
      root: v2,
      limit: (dir, quotaUs) => writeFileSync(join(dir, "cpu.max"), `${quotaUs} ${PERIOD_US}`),
    };
  throw new Error(
    "no cgroup with the cpu controller to write to (neither /sys/fs/cgroup/cpu nor cgroup v2's /sys/fs/cgroup with cpu enabled): the attack suite needs root and a writable cpu cgroup",
  );
}

/**
 * Moves process `pid` (all its threads) into a new cgroup allowed `millicores` of CPU (500
 * = half a core, as `limits.cpu: 500m`). Returns the cleanup, to call once the process
 * has exited (a cgroup is removed only when empty).
 */
export function limitCpu(pid: number, millicores: number): () => void {
  const h = hierarchy();
  const dir = join(h.root, `governor-test-${pid}`);
  mkdirSync(dir);
  h.limit(dir, Math.round((millicores / 1000) * PERIOD_US));
  writeFileSync(join(dir, "cgroup.procs"), String(pid));
  return () => {
    try {
      rmdirSync(dir);
    } catch {
      // not empty yet or already gone: nothing a test can do about it
    }
  };
}
