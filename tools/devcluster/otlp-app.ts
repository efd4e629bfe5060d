/**
 * The OpenTelemetry application image (`governor-otlp-app`) the node agent runs: the
 * OpenTelemetry JavaScript SDK set up as docs/opentelemetry.md shows, exporting every
 * `--interval-ms` with its OTLP/HTTP protobuf exporter to `--endpoint`:
 * - with `--queue`, a gauge `queue.depth{queue=jobs}` of that value;
 * - with `--rps`, a counter `http.server.requests{route=/}` growing by that much a second.
 * `POST /set?queue=N&rps=N` changes them at run time; `/healthz` answers once the first
 * export succeeded. The resource comes from `OTEL_RESOURCE_ATTRIBUTES`.
 *
 * With `--token-file`, each export carries that file's token (read at each export: the
 * kubelet renews a projected token); with `--ca-file` the endpoint's certificate is checked
 * against it, for `--server-name` when the endpoint is an address. SIGTERM flushes and
 * exits.
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-proto";
import { detectResources, envDetector } from "@opentelemetry/resources";
import { MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const number = (name: string, fallback: number): number => {
  const value = Number(arg(name) ?? fallback);
  if (!Number.isFinite(value) || value < 0) throw new Error(`--${name}: want a number >= 0`);
  return value;
};

const endpoint = arg("endpoint");
if (!endpoint) throw new Error("--endpoint: the OTLP/HTTP metrics URL to export to");
const tokenFile = arg("token-file");
const caFile = arg("ca-file");
const serverName = arg("server-name");
let queue = number("queue", 0);
let rps = number("rps", 0);
let exported = false;

const exporter = new OTLPMetricExporter({
  url: endpoint,
  ...(tokenFile
    ? {
        headers: async () => ({
          authorization: `Bearer ${(await readFile(tokenFile, "utf8")).trim()}`,
        }),
      }
    : {}),
  ...(caFile
    ? { httpAgentOptions: { ca: readFileSync(caFile), ...(serverName ? { servername: serverName } : {}) } }
    : {}),
});
const reader = new PeriodicExportingMetricReader({
  exporter: {
    export: (metrics, done) =>
      exporter.export(metrics, (result) => {
        if (result.error) console.error(JSON.stringify({ msg: "export failed", err: result.error.message }));
        else exported = true;
        done(result);
      }),
    forceFlush: () => exporter.forceFlush(),
    shutdown: () => exporter.shutdown(),
    selectAggregationTemporality: (kind) => exporter.selectAggregationTemporality(kind),
  },
  exportIntervalMillis: number("interval-ms", 1000),
});
const provider = new MeterProvider({
  resource: detectResources({ detectors: [envDetector] }),
  readers: [reader],
});
const meter = provider.getMeter("governor-otlp-app");
if (arg("queue") !== undefined)
  meter.createObservableGauge("queue.depth").addCallback((r) => r.observe(queue, { queue: "jobs" }));
const requests = arg("rps") !== undefined ? meter.createCounter("http.server.requests") : undefined;
const timer = setInterval(() => requests?.add(rps / 10, { route: "/" }), 100);

const server = createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://pod");
  if (url.pathname === "/healthz") return void res.writeHead(exported ? 200 : 503).end();
  if (url.pathname === "/set" && req.method === "POST") {
    for (const [name, set] of [
      ["queue", (v: number) => (queue = v)],
      ["rps", (v: number) => (rps = v)],
    ] as const) {
      const value = url.searchParams.get(name);
      if (value === null) continue;
      const n = Number(value);
      if (!Number.isFinite(n) || n < 0) return void res.writeHead(400).end(`${name}: want a number >= 0\n`);
      set(n);
    }
    return void res.end(`queue=${queue} rps=${rps}\n`);
  }
  res.writeHead(404).end();
});
const port = number("port", 8080);
server.listen(port, () => console.log(JSON.stringify({ msg: "otlp app listening", port, endpoint })));
process.once("SIGTERM", () => {
  clearInterval(timer);
  server.close();
  void provider.shutdown().finally(() => process.exit(0));
});
