/**
 * The bench's load generator and core probes: one Go program (bench/loadgen/, built by
 * hack/loadgen.sh) run as separate processes so each can be pinned to a core (`taskset`,
 * ADR 0005). As a load generator it reads one JSON `LoadRequest` per line on stdin and
 * writes one JSON `LoadResult` per line; as a probe (`loadgen probe`) it answers each line
 * with how fast its core runs right now.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** One load: `connections` keep-alive connections for `seconds`, over mTLS. */
export interface LoadRequest {
  url: string;
  connections: number;
  seconds: number;
  tls: { cert: string; key: string };
  headers?: Record<string, string>;
}

/**
 * What one load measured: 2xx answers per second and their latency percentiles in ms
 * (null when nothing was answered).
 */
export interface LoadResult {
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  answers: number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

/** The load generator process: one load at a time. */
export interface LoadGen {
  pid: number;
  run(r: LoadRequest): Promise<LoadResult>;
  stop(): Promise<void>;
}

/** The path of the built load generator (hack/loadgen.sh builds it when its source changed). */
export function loadgenBinary(): string {
  return execFileSync("bash", [join(ROOT, "hack/loadgen.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
}

/** A child process spoken to one line at a time: each `ask` gets the next line it prints. */
function lines(cp: ChildProcess) {
  const waiting: ((line: string | Error) => void)[] = [];
  let buf = "";
  cp.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      waiting.shift()?.(line);
    }
  });
  cp.once("exit", () => {
    for (const w of waiting.splice(0)) w(new Error("the load generator exited"));
  });
  const exited = new Promise<void>((r) => cp.once("exit", () => r()));
  let queue = Promise.resolve();
  return {
    ask(line: string): Promise<string> {
      const answer = queue.then(
        () =>
          new Promise<string>((resolve, reject) => {
            if (cp.exitCode !== null || cp.signalCode !== null)
              return reject(new Error("the load generator exited"));
            waiting.push((l) => (l instanceof Error ? reject(l) : resolve(l)));
            cp.stdin!.write(`${line}\n`);
          }),
      );
      queue = answer.then(
        () => undefined,
        () => undefined,
      );
      return answer;
    },
    async stop() {
      cp.stdin!.end();
      await exited;
    },
  };
}

/** Starts a load generator (unpinned: the harness's `pinned()` moves it for the rows that pin). */
export function startLoadGen(binary = loadgenBinary()): LoadGen {
  const cp = spawn(binary, [], { stdio: ["pipe", "pipe", "inherit"] });
  const io = lines(cp);
  return {
    pid: cp.pid!,
    async run(r) {
      const out = JSON.parse(await io.ask(JSON.stringify(r))) as LoadResult & { error?: string };
      if (out.error) throw new Error(`${r.url}: ${out.error}`);
      if (out.non2xx || out.errors || out.timeouts)
        throw new Error(
          `${r.url}: ${out.non2xx} non-2xx answers, ${out.errors} errors, ${out.timeouts} timeouts`,
        );
      return out;
    },
    stop: () => io.stop(),
  };
}

/** One probe per core: `speeds()` is each core's speed now (steps per µs, higher is faster). */
export interface CoreProbes {
  pids: number[];
  speeds(): Promise<number[]>;
  stop(): Promise<void>;
}

/** Starts a probe pinned to each of `cores` (ids as `taskset` takes them). */
export function startCoreProbes(cores: readonly string[], binary = loadgenBinary()): CoreProbes {
  const probes = cores.map((core) => {
    const cp = spawn("taskset", ["-c", core, binary, "probe"], { stdio: ["pipe", "pipe", "inherit"] });
    return { cp, io: lines(cp) };
  });
  return {
    pids: probes.map((p) => p.cp.pid!),
    speeds: () => Promise.all(probes.map(async (p) => Number(await p.io.ask("")))),
    async stop() {
      await Promise.all(probes.map((p) => p.io.stop()));
    },
  };
}
