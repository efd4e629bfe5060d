/**
 * Pushers made of OpenTelemetry's own programs: a MeterProvider of the JavaScript SDK whose
 * metrics are collected on demand, encoded by the SDK's own OTLP serializers (what its
 * exporters send) or sent by its OTLP/HTTP exporters (protobuf or JSON); and the
 * OpenTelemetry Collector (built by hack/otelcol.sh) forwarding what it receives with its
 * `otlphttp` exporter.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Meter } from "@opentelemetry/api";
import { OTLPMetricExporter as ProtoExporter } from "@opentelemetry/exporter-metrics-otlp-proto";
import {
  AggregationTemporalityPreference,
  OTLPMetricExporter as JsonExporter,
} from "@opentelemetry/exporter-metrics-otlp-http";
import { CompressionAlgorithm } from "@opentelemetry/otlp-exporter-base";
import { JsonMetricsSerializer, ProtobufMetricsSerializer } from "@opentelemetry/otlp-transformer";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  AggregationTemporality,
  MeterProvider,
  MetricReader,
  type ResourceMetrics,
} from "@opentelemetry/sdk-metrics";

import { type PeerProcess, startPeer } from "./peer-process.js";
import { freePort } from "./ports.js";

class OnDemandReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

/** Where and how an {@link SdkPusher} exports. */
export interface ExportTarget {
  url: string;
  token?: string;
  /** A file the token is read from at each export (a projected token, which the kubelet rotates). */
  tokenFile?: string;
  ca: string;
  /** The name the receiver's certificate is checked for, when the URL's host is not it. */
  servername?: string;
  encoding: "protobuf" | "json";
  gzip?: boolean;
}

/** See the module comment. */
export class SdkPusher {
  readonly meter: Meter;
  private readonly reader: OnDemandReader;
  private readonly provider: MeterProvider;

  constructor(resource: Record<string, string>, temporality: "cumulative" | "delta" = "cumulative") {
    this.reader = new OnDemandReader({
      aggregationTemporalitySelector: () =>
        temporality === "delta" ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE,
    });
    this.provider = new MeterProvider({ resource: resourceFromAttributes(resource), readers: [this.reader] });
    this.meter = this.provider.getMeter("governor-tests");
  }

  /** What the SDK has now. */
  async collect(): Promise<ResourceMetrics> {
    const { resourceMetrics, errors } = await this.reader.collect();
    if (errors.length > 0) throw errors[0] as Error;
    return resourceMetrics;
  }

  /** An export request of what the SDK has now, as its exporters encode it. */
  async body(encoding: "protobuf" | "json"): Promise<Uint8Array> {
    const rm = await this.collect();
    const body =
      encoding === "protobuf"
        ? ProtobufMetricsSerializer.serializeRequest(rm)
        : JsonMetricsSerializer.serializeRequest(rm);
    if (!body) throw new Error("the SDK's serializer gave nothing");
    return body;
  }

  /** Sends what the SDK has now with its OTLP/HTTP exporter; resolves with the exporter's error, if any. */
  async export(target: ExportTarget): Promise<Error | undefined> {
    const options = {
      url: target.url,
      // As docs/opentelemetry.md shows: the token file read at each export.
      headers: target.tokenFile
        ? async () => ({ authorization: `Bearer ${(await readFile(target.tokenFile!, "utf8")).trim()}` })
        : ((target.token ? { authorization: `Bearer ${target.token}` } : {}) as Record<string, string>),
      httpAgentOptions: { ca: target.ca, ...(target.servername ? { servername: target.servername } : {}) },
      compression: target.gzip ? CompressionAlgorithm.GZIP : CompressionAlgorithm.NONE,
      temporalityPreference: AggregationTemporalityPreference.CUMULATIVE,
      timeoutMillis: 5000,
    };
    const exporter = target.encoding === "protobuf" ? new ProtoExporter(options) : new JsonExporter(options);
    const rm = await this.collect();
    try {
      return await new Promise<Error | undefined>((resolve) => exporter.export(rm, (r) => resolve(r.error)));
    } finally {
      await exporter.shutdown();
    }
  }

  async shutdown(): Promise<void> {
    await this.provider.shutdown();
  }
}

/** The Collector binary, built once (cached outside the work tree) by hack/otelcol.sh. */
export function collectorBuild(): string {
  return execFileSync("bash", [fileURLToPath(new URL("../../hack/otelcol.sh", import.meta.url))], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
}

/**
 * The Collector configuration the docs show (docs/opentelemetry.md): the OTLP receiver,
 * the batch processor, and the `otlphttp` exporter to Governor with Governor's CA and a
 * service-account token for Governor's audience, read from `tokenFile` by the
 * `bearertokenauth` extension.
 */
export function collectorConfig(opts: {
  listen: string;
  governor: string;
  caFile: string;
  tokenFile: string;
  serverName?: string;
}): string {
  return `extensions:
  bearertokenauth/governor:
    filename: ${opts.tokenFile}
receivers:
  otlp:
    protocols:
      http:
        endpoint: ${opts.listen}
processors:
  batch:
    timeout: 200ms
exporters:
  otlp_http/governor:
    metrics_endpoint: ${opts.governor}
    compression: gzip
    tls:
      ca_file: ${opts.caFile}${opts.serverName ? `\n      server_name_override: ${opts.serverName}` : ""}
    auth:
      authenticator: bearertokenauth/governor
service:
  extensions: [bearertokenauth/governor]
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp_http/governor]
`;
}

/** A running Collector forwarding to Governor; pushers send to `url`. */
export interface RunningCollector extends PeerProcess {
  url: string;
}

/** Starts the Collector (see {@link collectorConfig}); resolves once its receiver answers. */
export async function startCollector(opts: {
  governor: string;
  ca: string;
  token: string;
  serverName?: string;
}): Promise<RunningCollector> {
  const dir = mkdtempSync(join(tmpdir(), "otelcol-"));
  const port = await freePort();
  writeFileSync(join(dir, "ca.crt"), opts.ca);
  writeFileSync(join(dir, "token"), opts.token);
  const config = join(dir, "config.yaml");
  writeFileSync(
    config,
    collectorConfig({
      listen: `127.0.0.1:${port}`,
      governor: opts.governor,
      caFile: join(dir, "ca.crt"),
      tokenFile: join(dir, "token"),
      serverName: opts.serverName,
    }),
  );
  const url = `http://127.0.0.1:${port}/v1/metrics`;
  const peer = await startPeer({
    bin: collectorBuild(),
    args: [`--config=file:${config}`],
    what: "the OpenTelemetry Collector's OTLP receiver",
    ready: async () => {
      // An empty export: 200 once the receiver runs.
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      if (res.status !== 200) throw new Error(`answered ${res.status}`);
    },
  });
  return { ...peer, url };
}
