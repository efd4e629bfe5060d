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
import { httpsGet } from "./https-get.js";
import { limitCpu } from "./cpu-limit.js";

/**
 * What to send: `paths[i % paths.length]` with every `{i}` (in the path and the header
 * values) replaced by `i` (from `from` on), `concurrency` at a time.
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
  /** A network namespace to run in (see {@link attackerNetwork}). */
  netns?: string,
): Promise<FloodResult> {
  const args = ["--import", "tsx", fileURLToPath(import.meta.url), "flood"];
  // `ip netns exec` enters the namespace and execs node in the same process (same pid).
  const cp = netns
    ? spawn("ip", ["netns", "exec", netns, process.execPath, ...args], { stdio: ["pipe", "pipe", "inherit"] })
    : spawn(process.execPath, args, { stdio: ["pipe", "pipe", "inherit"] });
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
      headers:
        plan.headers &&
        Object.fromEntries(
          Object.entries(plan.headers).map(([k, v]) => [k, v.replaceAll("{i}", String(from + i))]),
        ),
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

/**
 * A network namespace of the attacker's own, as a pod has: a veth pair to the host
 * (10.214.0.1/30 on the host, 10.214.0.2/30 inside) and a default route through it. From
 * there it reaches what a pod reaches through the host, e.g. the `kubernetes` Service's
 * ClusterIP, which the node agent's service proxy answers. Needs root; `remove` deletes it.
 */
export async function attackerNetwork(): Promise<{ netns: string; remove(): Promise<void> }> {
  const netns = "gov-attacker";
  const run = (...args: string[]) =>
    new Promise<void>((resolve, reject) => {
      const cp = spawn("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      cp.stderr.on("data", (d: Buffer) => (err += d.toString()));
      cp.on("exit", (code) =>
        code === 0 ? resolve() : reject(new Error(`ip ${args.join(" ")}: ${err.trim()}`)),
      );
    });
  const remove = async () => {
    await run("link", "del", "govatk0").catch(() => {});
    await run("netns", "del", netns).catch(() => {});
  };
  await remove(); // what a crashed run left
  await run("netns", "add", netns);
  await run("link", "add", "govatk0", "type", "veth", "peer", "name", "govatk1");
  await run("link", "set", "govatk1", "netns", netns);
  await run("addr", "add", "10.214.0.1/30", "dev", "govatk0");
  await run("link", "set", "govatk0", "up");
  await run("-n", netns, "addr", "add", "10.214.0.2/30", "dev", "govatk1");
  await run("-n", netns, "link", "set", "govatk1", "up");
  await run("-n", netns, "link", "set", "lo", "up");
  await run("-n", netns, "route", "add", "default", "via", "10.214.0.1");
  return { netns, remove };
}

/**
 * The attacker's endpoint: `/ok` answers `{"v": 5}`, `/big` streams 1 GiB of JSON
 * whitespace, and each of {@link HOSTILE_ANSWERS} answers what it names.
 * `/api/v1/query` answers as Prometheus does with a 5 MiB error (and a token at its end),
 * and keeps the query it was sent for `/last-query`.
 */
export interface HostileServer {
  base: string;
  /** The address it listens on. */
  address: string;
  /** Bytes of `/big` handed to sockets so far. */
  bigBytesSent(): Promise<number>;
  /** The last `query` sent to `/api/v1/query`. */
  lastQuery(): Promise<string>;
  stop(): void;
}

const MiB = 1 << 20;
/** What a source can be made to read, by path: answers built to cost a parser time or memory. */
export const HOSTILE_ANSWERS: Record<string, () => string> = {
  /** An exposition value of 100,000 digits ending in a letter (a backtracking number pattern: seconds). */
  "/digits": () => `http_requests_total ${"1".repeat(100_000)}x\n`,
  /** 10 MiB of exposition lines of one series (2.6 million samples). */
  "/lines": () => "a 1\n".repeat((10 * MiB) / 4),
  /** 10 MiB of empty JSON objects (3.5 million of them once parsed). */
  "/objects": () => `[${"{},".repeat((10 * MiB) / 3 - 1)}{}]`,
  /** 9 MiB of JSON (within the response limit) with the number asked for at its end. */
  "/padded": () => `{"pad": "${"a".repeat(9 * MiB)}", "x": 7}`,
};
/** The text `/api/v1/query`'s error ends with: it must never come back. */
export const ECHOED_SECRET = "internal-admin-token=s3cret-from-the-source";

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
    address,
    bigBytesSent: async () => Number(await (await fetch(`${base}/sent`)).text()),
    lastQuery: async () => (await fetch(`${base}/last-query`)).text(),
    stop: () => cp.kill(),
  };
}

function serve(address: string): void {
  let bigBytesSent = 0;
  let lastQuery = "";
  const answers = new Map(Object.entries(HOSTILE_ANSWERS).map(([path, make]) => [path, Buffer.from(make())]));
  const promError = Buffer.from(
    JSON.stringify({
      status: "error",
      errorType: "execution",
      error: `${"e".repeat(5 * MiB)} ${ECHOED_SECRET}`,
    }),
  );
  const server = createServer((req, res) => {
    if (req.url === "/ok") return void res.end('{"v": 5}');
    if (req.url === "/sent") return void res.end(String(bigBytesSent));
    if (req.url === "/last-query") return void res.end(lastQuery);
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/api/v1/query") {
      lastQuery = url.searchParams.get("query") ?? "";
      return void res.writeHead(200, { "content-type": "application/json" }).end(promError);
    }
    const answer = answers.get(url.pathname);
    if (answer) return void res.end(answer);
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
