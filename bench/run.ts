/**
 * `npm run bench`: Governor's speed measured against a baseline taken in the same run,
 * printed as one markdown table and written to bench/results/latest.md. Needs the local
 * control plane (started if it is not running). Load comes from autocannon.
 *
 * Rows so far: direct API (warm, 1/16/64 connections) against a bare node:https server
 * with the same TLS and bytes; apply-to-servable over 50 MetricMappings against the
 * apiserver's own create round-trip; coalescing of 100 concurrent first requests.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import { KubeConfig } from "@kubernetes/client-node";
import { createCA, issueCertificate } from "../src/certs/certs.js";
import { KubeClient } from "../src/k8s/client.js";
import { httpsGet } from "../src/testing/https-get.js";
import { freePort } from "../src/util/ports.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const NS = "governor-bench";

interface Row {
  name: string;
  figure: string;
  baseline: string;
  ratio: string;
}

const rows: Row[] = [];
const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");
const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

async function waitForLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = "";
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      const line = buf.split("\n")[0];
      if (buf.includes("\n") && line) resolve(line.trim());
    });
    child.once("exit", (code) => reject(new Error(`exited with ${code}`)));
  });
}

async function main() {
  const up = execFileSync("bash", [join(ROOT, "hack/cluster.sh"), "up"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  const kubeconfig = /export KUBECONFIG=(\S+)/.exec(up)![1]!;
  const env = { ...process.env, KUBECONFIG: kubeconfig };
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const client = new KubeClient(kc);
  execFileSync("kubectl", ["apply", "-k", join(ROOT, "crds")], { env, stdio: "ignore" });
  execFileSync("kubectl", ["wait", "--for=condition=Established", "crd/metricmappings.governor.dev"], {
    env,
    stdio: "ignore",
  });
  await client.delete(`/api/v1/namespaces/${NS}`);
  for (let i = 0; i < 120 && (await client.getOrUndefined(`/api/v1/namespaces/${NS}`)); i++)
    await new Promise((r) => setTimeout(r, 500));
  await client.create("/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });

  const dir = mkdtempSync(join(tmpdir(), "governor-bench-"));
  const ca = await createCA("bench");
  const leaf = await issueCertificate(ca, {
    commonName: "localhost",
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
  writeFileSync(join(dir, "tls.crt"), leaf.cert);
  writeFileSync(join(dir, "tls.key"), leaf.key);
  const pki = join(kubeconfig, "..", "pki");
  const clientCert = {
    cert: readFileSync(join(pki, "front-proxy-client.crt")),
    key: readFileSync(join(pki, "front-proxy-client.key")),
  };
  const headers = { "X-Remote-User": "system:kube-aggregator", "X-Remote-Group": "system:masters" };

  const port = await freePort();
  const governor = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(ROOT, "src/main.ts"),
      "run",
      "--kubeconfig",
      kubeconfig,
      "--registration",
      "none",
      "--no-leader-elect",
      "--tls-cert-file",
      join(dir, "tls.crt"),
      "--tls-private-key-file",
      join(dir, "tls.key"),
      "--bind-address",
      "127.0.0.1",
      "--secure-port",
      String(port),
      "--metrics-port",
      String(await freePort()),
      "--metrics-bind-address",
      "127.0.0.1",
      "--log-level",
      "warn",
      "--shutdown-delay",
      "0",
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  let bare: ChildProcess | undefined;
  try {
    // A cached object metric: a static value on the namespace.
    execFileSync("kubectl", ["apply", "-n", NS, "-f", "-"], {
      env,
      input: `apiVersion: governor.dev/v1alpha1\nkind: MetricMapping\nmetadata: {name: bench}\nspec: {metric: bench_value, subject: {resource: namespaces}, source: {static: {value: "42"}}}\n`,
    });
    const path = `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/metrics/bench_value`;
    const url = `https://127.0.0.1:${port}${path}`;
    let body = "";
    for (let i = 0; i < 200; i++) {
      const r = await httpsGet(url, {
        ...clientCert,
        cert: clientCert.cert.toString(),
        key: clientCert.key.toString(),
        ca: ca.cert,
        servername: "localhost",
        headers,
      }).catch(() => undefined);
      if (r?.status === 200) {
        body = r.text;
        break;
      }
      await new Promise((res) => setTimeout(res, 250));
    }
    if (!body) throw new Error("Governor did not serve the benchmark metric");
    writeFileSync(join(dir, "body.json"), body);
    bare = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(ROOT, "bench/bare-server.ts"),
        join(dir, "tls.crt"),
        join(dir, "tls.key"),
        join(dir, "body.json"),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const barePort = Number(await waitForLine(bare));

    for (const connections of [1, 16, 64]) {
      const load = (target: string) =>
        autocannon({ url: target, connections, duration: 5, headers, tlsOptions: clientCert });
      await load(`https://127.0.0.1:${barePort}/`); // warm-up, both
      await load(url);
      const b = await load(`https://127.0.0.1:${barePort}${path}`);
      const g = await load(url);
      if (g.non2xx || g.errors)
        throw new Error(`Governor answered ${g.non2xx} non-2xx and ${g.errors} errors`);
      rows.push({
        name: `direct API, warm, ${connections} conn: req/s`,
        figure: fmt(g.requests.average, 0),
        baseline: `${fmt(b.requests.average, 0)} (bare node:https)`,
        ratio: fmt(g.requests.average / b.requests.average, 2),
      });
      rows.push({
        name: `direct API, warm, ${connections} conn: p50 / p99 ms`,
        figure: `${g.latency.p50} / ${g.latency.p99}`,
        baseline: `${b.latency.p50} / ${b.latency.p99}`,
        // autocannon reports whole milliseconds: a 0 ms baseline has no meaningful ratio.
        ratio: `${b.latency.p50 > 0 ? fmt(g.latency.p50 / b.latency.p50, 2) : "n/a"} / ${b.latency.p99 > 0 ? fmt(g.latency.p99 / b.latency.p99, 2) : "n/a"}`,
      });
    }

    // Apply to servable: create → listed in discovery and answering 200, over 50 mappings.
    const servable: number[] = [];
    const creates: number[] = [];
    for (let i = 0; i < 50; i++) {
      const name = `apply-${i}`;
      const t0 = performance.now();
      await client.create(`/apis/governor.dev/v1alpha1/namespaces/${NS}/metricmappings`, {
        apiVersion: "governor.dev/v1alpha1",
        kind: "MetricMapping",
        metadata: { name },
        spec: {
          metric: `m_${i}`,
          subject: { resource: "namespaces" },
          source: { static: { value: String(i) } },
        },
      });
      creates.push(performance.now() - t0);
      const opts = {
        cert: clientCert.cert.toString(),
        key: clientCert.key.toString(),
        ca: ca.cert,
        servername: "localhost",
        headers,
      };
      for (;;) {
        const d = await httpsGet(`https://127.0.0.1:${port}/apis/custom.metrics.k8s.io/v1beta2`, opts);
        const listed = ((d.json as { resources?: { name: string }[] } | undefined)?.resources ?? []).some(
          (r) => r.name === `namespaces/m_${i}`,
        );
        const v = listed
          ? await httpsGet(
              `https://127.0.0.1:${port}/apis/custom.metrics.k8s.io/v1beta2/namespaces/${NS}/metrics/m_${i}`,
              opts,
            )
          : undefined;
        if (v?.status === 200) break;
        if (performance.now() - t0 > 10_000) throw new Error(`mapping ${name} not servable after 10 s`);
        await new Promise((r) => setTimeout(r, 2));
      }
      servable.push(performance.now() - t0);
    }
    rows.push({
      name: "apply → servable, 50 MetricMappings: p50 / p99 ms",
      figure: `${fmt(percentile(servable, 50))} / ${fmt(percentile(servable, 99))}`,
      baseline: `${fmt(percentile(creates, 50))} / ${fmt(percentile(creates, 99))} (apiserver create round-trip)`,
      ratio: `${fmt(percentile(servable, 50) / percentile(creates, 50), 2)} / ${fmt(percentile(servable, 99) / percentile(creates, 99), 2)}`,
    });

    // Coalescing: 100 concurrent first requests for a metric whose source is slow.
    let hits = 0;
    const source = createServer((_req, res) => {
      hits++;
      setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end('{"v": 7}'), 200);
    });
    await new Promise<void>((r) => source.listen(0, "127.0.0.1", () => r()));
    const sourcePort = (source.address() as { port: number }).port;
    execFileSync("kubectl", ["apply", "-n", NS, "-f", "-"], {
      env,
      input: `apiVersion: governor.dev/v1alpha1\nkind: MetricMapping\nmetadata: {name: coalesce}\nspec: {metric: coalesce, subject: {external: {}}, interval: 10m, source: {http: {url: "http://127.0.0.1:${sourcePort}/", jsonPath: "$.v"}}}\n`,
    });
    const extUrl = `https://127.0.0.1:${port}/apis/external.metrics.k8s.io/v1beta1/namespaces/${NS}/coalesce`;
    const opts = {
      cert: clientCert.cert.toString(),
      key: clientCert.key.toString(),
      ca: ca.cert,
      servername: "localhost",
      headers,
    };
    let answers: { status: number }[] = [];
    for (let i = 0; i < 100 && !answers.some((a) => a.status === 200); i++) {
      answers = await Promise.all(Array.from({ length: 100 }, () => httpsGet(extUrl, opts)));
      if (!answers.some((a) => a.status === 200)) await new Promise((r) => setTimeout(r, 50));
    }
    source.close();
    rows.push({
      name: "coalescing: source queries for 100 concurrent clients in one interval",
      figure: String(hits),
      baseline: "1 (one query per interval)",
      ratio: fmt(hits / 1, 2),
    });
  } finally {
    governor.kill("SIGTERM");
    bare?.kill("SIGTERM");
    await client.delete(`/api/v1/namespaces/${NS}`).catch(() => {});
    await client.close();
  }

  const table = [
    `Governor benchmarks — ${new Date().toISOString().slice(0, 16)}Z, Node ${process.version}, ${(await import("node:os")).cpus().length} cores`,
    "",
    "| row | Governor | baseline (same run) | ratio |",
    "| --- | --- | --- | --- |",
    ...rows.map((r) => `| ${r.name} | ${r.figure} | ${r.baseline} | ${r.ratio} |`),
    "",
    "Not measured yet: through the aggregator vs the Go sample-apiserver, selector queries over 5,000 pods, 10,000 mappings.",
    "",
  ].join("\n");
  writeFileSync(join(ROOT, "bench/results/latest.md"), table);
  console.log(table);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
