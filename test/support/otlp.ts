/**
 * A pusher made of the OpenTelemetry JavaScript SDK itself: a MeterProvider whose metrics
 * are collected on demand, encoded by the SDK's own OTLP serializers (what its exporters
 * send) or sent by its OTLP/HTTP exporters (protobuf or JSON) to a receiver.
 */
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

class OnDemandReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

/** Where and how an {@link SdkPusher} exports. */
export interface ExportTarget {
  url: string;
  token?: string;
  ca: string;
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
      headers: (target.token ? { authorization: `Bearer ${target.token}` } : {}) as Record<string, string>,
      httpAgentOptions: { ca: target.ca },
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
