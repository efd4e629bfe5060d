/**
 * The attacker of the attack suite, in a process of its own as an attacker is: its work
 * does not run on the event loop of the test that times the legitimate requests (an HPA
 * controller is not in the attacker's process either). Two roles: a request flood
 * ({@link flood}: the script reads one {@link FloodPlan} as JSON on stdin and prints the
 * statuses it got) and an endpoint a MetricMapping points at ({@link hostileServer}).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:http";
import { Agent } from "node:https";
import { fileURLToPath } from "node:url";
import { httpsGet } from "../../src/testing/https-get.js";
import { limitCpu } from "./cpu-limit.js";

/**
 * What to send: `paths[i % paths.length]` with every `{i}` replaced by `i` (from `from`
 * on), `concurrency` at a time.
 */
export interface FloodPlan {
  base: string;
  paths: string[];
  /** The first `i`. @default 0 */
  from?: number;
  /** Send at least this many… */
  count: number;
  /** …and keep on until this many ms passed. */
  minMs: number;
  concurrency: number;
  ca: string;
  servername: string;
  /** A client certificate and headers; none sends requests without credentials. */
  cert?: string;
  key?: string;
  headers?: Record<string, string>;
}

/** What a flood got: requests per status, how many it sent, and how many per second. */
export interface FloodResult {
  statuses: Map<number, number>;
  sent: number;
  perSecond: number;
}

/**
 * Runs `plan` in a child process and waits for it; `onStart` is called when the child
 * sends its first requests (after its start-up). With `cpuMillicores`, the child runs
 * under that CPU limit (cpu-limit.ts), as a tenant's pod with `limits.cpu` would.
 */
export async function flood(
  plan: FloodPlan,
  onStart?: () => void,
  cpuMillicores?: number,
): Promise<FloodResult> {
  const cp = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "flood"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  let release = () => {};
  if (cpuMillicores !== undefined) {
    try {
      release = limitCpu(cp.pid!, cpuMillicores);
    } catch (err) {
      cp.kill();
      throw err;
    }
  }
  let out = "";
  cp.stdout.on("data", (d: Buffer) => {
    out += d.toString();
    if (onStart && out.startsWith("flooding\n")) {
      const started = onStart;
      onStart = undefined;
      started();
    }
  });
  cp.stdin.end(JSON.stringify(plan));
  const code = await new Promise<number | null>((resolve) => cp.once("exit", resolve));
  release();
  if (code !== 0) throw new Error(`the flood process exited with ${code}: ${out}`);
  const r = JSON.parse(out.slice("flooding\n".length)) as Omit<FloodResult, "statuses"> & {
    statuses: [number, number][];
  };
  return { ...r, statuses: new Map(r.statuses) };
}

async function run(
  plan: FloodPlan,
): Promise<Omit<FloodResult, "statuses"> & { statuses: [number, number][] }> {
  const agent = new Agent({ keepAlive: true, maxSockets: plan.concurrency });
  const statuses = new Map<number, number>();
  process.stdout.write("flooding\n");
  const started = Date.now();
  const from = plan.from ?? 0;
  let sent = 0;
  const send = (i: number) =>
    httpsGet(plan.base + plan.paths[i % plan.paths.length]!.replaceAll("{i}", String(from + i)), {
      agent,
      ca: plan.ca,
      servername: plan.servername,
      cert: plan.cert,
      key: plan.key,
      headers: plan.headers,
    }).then(
      (r) => r.status,
      () => 0, // a connection error: counted as status 0
    );
  // `concurrency` senders, each sending its next request when its last is answered.
  const sender = async () => {
    while (sent < plan.count || Date.now() - started < plan.minMs) {
      const status = await send(sent++);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: plan.concurrency }, sender));
  agent.destroy();
  return { statuses: [...statuses], sent, perSecond: Math.round((sent * 1000) / (Date.now() - started)) };
}

/** The attacker's endpoint: `/ok` answers `{"v": 5}`, `/big` streams 1 GiB of JSON whitespace. */
export interface HostileServer {
  base: string;
  /** Bytes of `/big` handed to sockets so far. */
  bigBytesSent(): Promise<number>;
  stop(): void;
}

/** Starts the attacker's endpoint on `address` in a child process. */
export async function hostileServer(address: string): Promise<HostileServer> {
  const cp: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", fileURLToPath(import.meta.url), "serve", address],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    cp.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
    cp.once("exit", (code) => reject(new Error(`the hostile server exited with ${code}`)));
  });
  const base = `http://${address}:${port}`;
  return {
    base,
    bigBytesSent: async () => Number(await (await fetch(`${base}/sent`)).text()),
    stop: () => cp.kill(),
  };
}

function serve(address: string): void {
  let bigBytesSent = 0;
  const server = createServer((req, res) => {
    if (req.url === "/ok") return void res.end('{"v": 5}');
    if (req.url === "/sent") return void res.end(String(bigBytesSent));
    res.writeHead(200, { "content-type": "application/json" });
    const chunk = Buffer.alloc(1 << 20, 0x20);
    let sent = 0;
    const pump = () => {
      while (sent < 1024) {
        sent++;
        bigBytesSent += chunk.length; // handed to the socket (its buffers hold a little)
        if (!res.write(chunk)) return void res.once("drain", pump);
      }
      res.end();
    };
    res.on("close", () => res.removeAllListeners("drain"));
    pump();
  });
  server.listen(0, address, () => process.stdout.write(`${(server.address() as { port: number }).port}\n`));
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === "serve")
  serve(process.argv[3]!);
if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === "flood") {
  let input = "";
  process.stdin.on("data", (d: Buffer) => (input += d.toString()));
  process.stdin.on("end", () => {
    run(JSON.parse(input) as FloodPlan).then(
      (r) => process.stdout.write(JSON.stringify(r)),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  });
}
