/**
 * Work on the machine that is not part of the row being measured. Interleaving protects a
 * ratio from noise that lands on both sides of a round; it does not protect a round that
 * another process (a build, the scheduler binding 5,000 pods, a compaction) shares with one
 * side only. So every round measures the CPU the whole machine used apart from the
 * processes the row expects to work (the load generator, the server answering, the
 * row's background such as kube-apiserver), and a round where that outside work exceeds
 * `DISTURBED_CORES` is measured again (ADR 0005). Before a row starts, the machine is
 * given time to settle below the same bound.
 */
import { readFileSync } from "node:fs";

/** Outside work (cores, averaged over a round) above which a round is disturbed. */
export const DISTURBED_CORES = 0.25;
/** How many times a disturbed round is measured again before it is kept as it is. */
export const MAX_REDOS = 3;

/** Kernel clock ticks per second (USER_HZ): the unit of /proc/stat and /proc/<pid>/stat. */
const TICKS = 100;

/** CPU ticks used so far, by the whole machine and by each of some processes, at a time. */
export interface CpuSnapshot {
  atMs: number;
  busy: number;
  pids: Record<number, number>;
}

/**
 * Busy ticks of the machine from the first (`cpu …`) line of /proc/stat: all but idle and
 * iowait. Interrupt time stays in: the kernel files a tick spent in an interrupt under
 * irq/softirq here but also charges it to the process it interrupted (on loopback, the
 * sender runs its own packets' softirq), so leaving it out makes the row's own processes
 * look bigger than the machine's busy time and hides real outside work. Steal (the
 * hypervisor running someone else) counts as outside work.
 */
export function busyTicks(statLine: string): number {
  const [user, nice, system, , , irq, softirq, steal] = statLine.trim().split(/\s+/).slice(1).map(Number);
  return user! + nice! + system! + irq! + softirq! + (steal ?? 0);
}

/** User + system ticks of one process (all its threads) from its /proc/<pid>/stat. */
export function processTicks(stat: string): number {
  // The command name may hold spaces and parentheses; the fields after its last ")" do not.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** The machine's and `pids`' CPU ticks now (a process that is gone reads as absent). */
export function snapshot(pids: readonly number[]): CpuSnapshot {
  const out: CpuSnapshot = {
    atMs: performance.now(),
    busy: busyTicks(readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!),
    pids: {},
  };
  for (const pid of pids) {
    try {
      out.pids[pid] = processTicks(readFileSync(`/proc/${pid}/stat`, "utf8"));
    } catch {
      // exited: its ticks count as outside work
    }
  }
  return out;
}

/**
 * Cores' worth of CPU used between two snapshots by everything but the processes in both:
 * the machine's busy ticks minus those processes' ticks, over the time between.
 */
export function outsideCores(before: CpuSnapshot, after: CpuSnapshot): number {
  const seconds = (after.atMs - before.atMs) / 1000;
  if (seconds <= 0) return 0;
  let expected = 0;
  for (const [pid, ticks] of Object.entries(after.pids)) {
    const was = before.pids[Number(pid)];
    if (was !== undefined) expected += ticks - was;
  }
  return Math.max(0, after.busy - before.busy - expected) / TICKS / seconds;
}

/** Cores' worth of CPU that `pids` used between two snapshots (those present in both). */
export function coresOf(before: CpuSnapshot, after: CpuSnapshot, pids: readonly number[]): number {
  const seconds = (after.atMs - before.atMs) / 1000;
  let ticks = 0;
  for (const pid of pids) {
    const [was, is] = [before.pids[pid], after.pids[pid]];
    if (was !== undefined && is !== undefined) ticks += is - was;
  }
  return seconds > 0 ? ticks / TICKS / seconds : 0;
}

/**
 * Waits until one second passes with less than `DISTURBED_CORES` of outside work, at most
 * `timeoutMs`; returns how long it waited and whether the machine settled.
 */
export async function settle(
  expected: readonly number[],
  timeoutMs = 180_000,
): Promise<{ waitedMs: number; settled: boolean }> {
  const start = performance.now();
  for (;;) {
    const before = snapshot(expected);
    await new Promise((r) => setTimeout(r, 1000));
    const waitedMs = performance.now() - start;
    if (outsideCores(before, snapshot(expected)) < DISTURBED_CORES) return { waitedMs, settled: true };
    if (waitedMs > timeoutMs) return { waitedMs, settled: false };
  }
}

/**
 * A round during which a core ran below this fraction of its usual speed is measured
 * again. On this kind of VM a core sometimes runs at about half speed for minutes with
 * no steal time reported (ADR 0005), which no CPU accounting sees; only timing a fixed
 * piece of work on the core does. Probes scatter by about ±10 % on a quiet core.
 */
export const SLOWED = 0.7;

/**
 * How fast each core runs now relative to its usual speed: the 90th percentile of all
 * probes of that core so far (`history[i]` holds core i's). 1 is usual; an empty history
 * reads as usual.
 */
export function coreSpeeds(history: readonly (readonly number[])[], now: readonly number[]): number[] {
  return now.map((speed, core) => {
    const seen = [...(history[core] ?? [])].sort((x, y) => x - y);
    if (!seen.length) return 1;
    const usual = seen[Math.min(seen.length - 1, Math.ceil(0.9 * seen.length) - 1)]!;
    return usual > 0 ? speed / usual : 1;
  });
}
