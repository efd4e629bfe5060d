/**
 * Where a MetricMapping's memory goes: Governor (dist/, the shipped Node flags) on the local
 * control plane with N static MetricMappings, a heap snapshot at N/2 and at N, and the live
 * heap that grew between them by kind of object, per mapping (Maps' tables and other
 * structures that grow with the count included, which a snapshot after deleting mappings
 * would miss). ADR 0019 quotes it.
 *
 *   bash hack/cluster.sh up && npm run build
 *   node --max-old-space-size=6000 --import tsx hack/heap-probe.ts [N]     (default 20000)
 *
 * Prints the table and writes it as JSON to bench/results/<time>-heap-probe.json. Uses the
 * namespace governor-heap-probe, deleted at the end.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeClient, loadKubeConfig } from "../src/k8s/client.js";
import { ROOT, pool, shippedNodeOptions, sleep } from "../bench/harness.js";
import { freePort } from "../test/support/ports.js";

const NS = "governor-heap-probe";
const PATH = `/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`;

/** What {@link kindsOf} reads of a `.heapsnapshot`. */
interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
  nodes: number[];
  strings: string[];
}

/** Live bytes and object counts of one heap snapshot, by kind of object. */
type Kinds = Map<string, { count: number; bytes: number }>;

/** Sums a `.heapsnapshot`'s nodes by type and constructor (strings by their shape, digits as #). */
export function kindsOf(snapshot: HeapSnapshot): { kinds: Kinds; total: number } {
  const fields = snapshot.snapshot.meta.node_fields;
  const types = snapshot.snapshot.meta.node_types[0];
  const [width, typeAt, nameAt, sizeAt] = [
    fields.length,
    fields.indexOf("type"),
    fields.indexOf("name"),
    fields.indexOf("self_size"),
  ];
  const kinds: Kinds = new Map();
  let total = 0;
  for (let i = 0; i < snapshot.nodes.length; i += width) {
    const type = types[snapshot.nodes[i + typeAt]!]!;
    let name = snapshot.strings[snapshot.nodes[i + nameAt]!]!;
    if (type.includes("string")) name = JSON.stringify(name.replace(/[0-9]+/g, "#").slice(0, 40));
    else if (type === "number" || type === "code") name = "";
    const key = `${type} ${name.slice(0, 60)}`.trim();
    const bytes = snapshot.nodes[i + sizeAt]!;
    const k = kinds.get(key) ?? { count: 0, bytes: 0 };
    k.count++;
    k.bytes += bytes;
    kinds.set(key, k);
    total += bytes;
  }
  return { kinds, total };
}

async function create(client: KubeClient, from: number, to: number): Promise<void> {
  await pool(to - from, 32, (i) =>
    client
      .create(PATH, {
        apiVersion: "governor.dev/v1alpha1",
        kind: "MetricMapping",
        metadata: { name: `many-${from + i}` },
        spec: {
          metric: `many_${from + i}`,
          subject: { resource: "pods" },
          source: { static: { value: String(from + i) } },
        },
      })
      .catch((err: unknown) => {
        if ((err as { statusCode?: number }).statusCode !== 409) throw err;
      }),
  );
}

/** Waits until `n` mappings of the namespace say Ready. */
async function ready(client: KubeClient, n: number): Promise<void> {
  for (let waited = 0; ; waited += 5) {
    const list = await client.get<{
      items: { status?: { conditions?: { type: string; status: string }[] } }[];
    }>(PATH);
    const count = list.items.filter((m) =>
      m.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
    ).length;
    if (count >= n) return;
    if (waited > 900) throw new Error(`after 15 min: ${count} of ${n} mappings Ready`);
    await sleep(5000);
  }
}

/** Signals Governor to write a snapshot into `dir` and reads it once written. */
async function snapshot(pid: number, dir: string): Promise<ReturnType<typeof kindsOf>> {
  const before = new Set(readdirSync(dir));
  await sleep(10_000); // let the last status writes and their garbage settle
  process.kill(pid, "SIGUSR2");
  for (let waited = 0; waited < 300; waited++) {
    await sleep(1000);
    const file = readdirSync(dir).find((f) => f.endsWith(".heapsnapshot") && !before.has(f));
    if (!file) continue;
    const path = join(dir, file);
    // Written while Governor runs on: read once it is whole JSON (it ends with "]}").
    for (let tries = 0; tries < 150; tries++, await sleep(2000)) {
      const text = readFileSync(path, "utf8");
      if (!text.trimEnd().endsWith("]}")) continue;
      let parsed: HeapSnapshot;
      try {
        parsed = JSON.parse(text) as HeapSnapshot;
      } catch {
        continue; // cut at a "]}" inside
      }
      rmSync(path);
      return kindsOf(parsed);
    }
    throw new Error(`${path} was not whole after 5 minutes`);
  }
  throw new Error("Governor wrote no heap snapshot in 5 minutes");
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 20_000);
  if (!Number.isInteger(n) || n < 2) throw new Error("usage: heap-probe.ts [N ≥ 2]");
  const kubeconfig = join(ROOT, ".cluster/kubeconfig");
  const client = new KubeClient(loadKubeConfig(kubeconfig));
  // An earlier probe's namespace may still be going.
  for (let waited = 0; await client.getOrUndefined(`/api/v1/namespaces/${NS}`); waited++) {
    if (waited > 300) throw new Error(`namespace ${NS} still there after 10 minutes`);
    await sleep(2000);
  }
  await client.create("/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
  const dir = mkdtempSync(join(tmpdir(), "heap-probe-"));
  const governor = spawn(
    process.execPath,
    [
      ...shippedNodeOptions(),
      "--heapsnapshot-signal=SIGUSR2",
      `--diagnostic-dir=${dir}`,
      join(ROOT, "dist/main.js"),
      "run",
      ...["--kubeconfig", kubeconfig, "--registration", "none", "--no-leader-elect"],
      ...["--bind-address", "127.0.0.1", "--secure-port", String(await freePort())],
      ...["--metrics-bind-address", "127.0.0.1", "--metrics-port", String(await freePort())],
      ...["--log-level", "warn", "--shutdown-delay", "0"],
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  try {
    const half = Math.floor(n / 2);
    await create(client, 0, half);
    await ready(client, half);
    const a = await snapshot(governor.pid!, dir);
    await create(client, half, n);
    await ready(client, n);
    const b = await snapshot(governor.pid!, dir);
    const added = n - half;
    const rows = [...new Set([...a.kinds.keys(), ...b.kinds.keys()])]
      .map((kind) => {
        const [x, y] = [a.kinds.get(kind), b.kinds.get(kind)];
        return {
          kind,
          perMapping: ((y?.count ?? 0) - (x?.count ?? 0)) / added,
          bytesPerMapping: ((y?.bytes ?? 0) - (x?.bytes ?? 0)) / added,
        };
      })
      .filter((r) => Math.abs(r.bytesPerMapping) >= 1)
      .sort((p, q) => q.bytesPerMapping - p.bytesPerMapping);
    const result = {
      time: new Date().toISOString(),
      commit: execFileSync("git", ["describe", "--always", "--dirty"], {
        cwd: ROOT,
        encoding: "utf8",
      }).trim(),
      mappings: [half, n],
      liveMB: [a.total / 1e6, b.total / 1e6],
      bytesPerMapping: (b.total - a.total) / added,
      nodeOptions: shippedNodeOptions(),
      rows,
    };
    console.log(
      `live heap ${result.liveMB.map((m) => m.toFixed(1)).join(" → ")} MB from ${half} to ${n} mappings: ${result.bytesPerMapping.toFixed(0)} B per mapping`,
    );
    for (const r of rows.slice(0, 30))
      console.log(
        `${r.bytesPerMapping.toFixed(0).padStart(6)} B  ${r.perMapping.toFixed(2).padStart(5)} ×  ${r.kind}`,
      );
    // Named as the bench names its runs: 2026-12-07T1116Z-….
    const stamp = `${result.time.slice(0, 13)}${result.time.slice(14, 16)}Z`;
    const out = join(ROOT, "bench/results", `${stamp}-heap-probe.json`);
    writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
    console.log(`raw: ${out}`);
  } finally {
    governor.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
    await client.delete(`/api/v1/namespaces/${NS}`).catch(() => {});
  }
}

await main();
