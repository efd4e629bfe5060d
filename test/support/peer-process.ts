/**
 * A peer's program (prometheus-adapter, KEDA), built from its Go module by `hack/peers.sh`
 * and run as a local process by the e2e tests and the bench: its log kept, its readiness
 * awaited, and stopped with SIGTERM.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { eventually } from "./eventually.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Builds a peer once (cached outside the work tree) and returns what `hack/peers.sh` prints. */
export function peerBuild(peer: "prometheus-adapter" | "keda"): string {
  return execFileSync("bash", [join(ROOT, "hack/peers.sh"), peer], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
}

/** A running peer process. */
export interface PeerProcess {
  process: ChildProcess;
  /** The last 100 kB of its stdout and stderr. */
  log: () => string;
  /** SIGTERM, and wait for it to exit. */
  stop(): Promise<void>;
}

/** Options of {@link startPeer}. */
export interface StartPeerOptions {
  bin: string;
  args: string[];
  /** @default the environment of this process */
  env?: NodeJS.ProcessEnv;
  /** For the error when it never gets ready, e.g. `prometheus-adapter healthy`. */
  what: string;
  /** Throws until the process is ready. */
  ready: () => Promise<void>;
  /** @default 60_000 */
  timeoutMs?: number;
}

/** Starts a peer's binary; resolves once `ready` passes, or stops it and throws with its log. */
export async function startPeer(opts: StartPeerOptions): Promise<PeerProcess> {
  const cp = spawn(opts.bin, opts.args, { stdio: ["ignore", "pipe", "pipe"], env: opts.env });
  let log = "";
  const keep = (d: Buffer) => (log = (log + d.toString()).slice(-100_000));
  cp.stdout.on("data", keep);
  cp.stderr.on("data", keep);
  const peer: PeerProcess = { process: cp, log: () => log, stop: () => stopProcess(cp) };
  try {
    await eventually(
      async () => {
        if (cp.exitCode !== null) throw new Error(`exited with ${cp.exitCode}`);
        await opts.ready();
      },
      { timeoutMs: opts.timeoutMs ?? 60_000, intervalMs: 100, what: opts.what },
    );
  } catch (err) {
    await peer.stop();
    throw new Error(`${(err as Error).message}\n${log.slice(-3000)}`);
  }
  return peer;
}

/** SIGTERM (after SIGCONT, in case a measurement left it paused), and wait for it to exit. */
export async function stopProcess(cp: ChildProcess): Promise<void> {
  if (cp.exitCode !== null || cp.signalCode !== null) return;
  const exited = new Promise((r) => cp.once("exit", r));
  cp.kill("SIGCONT");
  cp.kill("SIGTERM");
  await exited;
}
