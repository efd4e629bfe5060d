/**
 * Mocha root hooks and global fixtures for the whole suite: the local control plane is
 * started lazily by the first suite that calls `useCluster()` (see cluster.ts), its
 * components' log tails are printed under any failed test that used it, and it is
 * stopped after the run if the run started it.
 */
import type { Context } from "mocha";
import { clusterLogTails, state, stopClusterIfOurs } from "./cluster.js";

export const mochaHooks = {
  async afterEach(this: Context) {
    if (this.currentTest?.state !== "failed" || !state.used) return;
    const tails = await clusterLogTails().catch((err: unknown) => `(could not read logs: ${String(err)})`);
    console.error(`\n--- control plane log tails after "${this.currentTest.fullTitle()}" ---\n${tails}`);
  },
};

export async function mochaGlobalTeardown() {
  await stopClusterIfOurs();
}
