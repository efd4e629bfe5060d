/**
 * Container probes as the kubelet runs them: `httpGet` (HTTP or HTTPS without verifying
 * the certificate; 200–399 is success), `tcpSocket` (a connection is success) and `exec`
 * (exit 0 in the pod's network namespace), each bounded by `timeoutSeconds`. Named ports
 * resolve against the container's ports. A `grpc` probe is reported as unsupported.
 */
import { execFile } from "node:child_process";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { createConnection } from "node:net";

/** A probe as written in a pod spec. */
export interface Probe {
  httpGet?: {
    path?: string;
    port: number | string;
    scheme?: string;
    host?: string;
    httpHeaders?: { name: string; value: string }[];
  };
  tcpSocket?: { port: number | string; host?: string };
  exec?: { command?: string[] };
  grpc?: unknown;
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  successThreshold?: number;
  failureThreshold?: number;
  terminationGracePeriodSeconds?: number;
}

/** A probe's settings with the Kubernetes defaults filled in. */
export function probeTiming(p: Probe) {
  return {
    initialDelayMs: (p.initialDelaySeconds ?? 0) * 1000,
    periodMs: Math.max(1, p.periodSeconds ?? 10) * 1000,
    timeoutMs: Math.max(1, p.timeoutSeconds ?? 1) * 1000,
    successThreshold: Math.max(1, p.successThreshold ?? 1),
    failureThreshold: Math.max(1, p.failureThreshold ?? 3),
  };
}

/** The outcome of one probe run. */
export interface ProbeResult {
  ok: boolean;
  message: string;
}

/** Runs `probe` once against a pod at `podIP`. */
export async function runProbe(
  probe: Probe,
  target: { podIP: string; netns: string; ports: { name?: string; containerPort: number }[] },
): Promise<ProbeResult> {
  const timeoutMs = probeTiming(probe).timeoutMs;
  const portOf = (port: number | string): number | undefined =>
    typeof port === "number"
      ? port
      : (target.ports.find((p) => p.name === port)?.containerPort ??
        (/^\d+$/.test(port) ? Number(port) : undefined));
  if (probe.httpGet) {
    const g = probe.httpGet;
    const port = portOf(g.port);
    if (!port) return { ok: false, message: `httpGet: no container port named ${g.port}` };
    const https = (g.scheme ?? "HTTP").toUpperCase() === "HTTPS";
    return new Promise((resolve) => {
      const req = (https ? httpsRequest : httpRequest)(
        {
          host: g.host ?? target.podIP,
          port,
          path: g.path ?? "/",
          method: "GET",
          headers: Object.fromEntries((g.httpHeaders ?? []).map((h) => [h.name, h.value])),
          rejectUnauthorized: false,
          timeout: timeoutMs,
          agent: false,
        },
        (res) => {
          res.resume();
          const code = res.statusCode ?? 0;
          resolve({ ok: code >= 200 && code < 400, message: `HTTP probe failed with statuscode: ${code}` });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`Get ${g.path ?? "/"}: context deadline exceeded`)));
      req.on("error", (err) => resolve({ ok: false, message: err.message }));
      req.end();
    });
  }
  if (probe.tcpSocket) {
    const port = portOf(probe.tcpSocket.port);
    if (!port) return { ok: false, message: `tcpSocket: no container port named ${probe.tcpSocket.port}` };
    return new Promise((resolve) => {
      const socket = createConnection({
        host: probe.tcpSocket!.host ?? target.podIP,
        port,
        timeout: timeoutMs,
      });
      socket.once("connect", () => {
        socket.destroy();
        resolve({ ok: true, message: "" });
      });
      socket.once("timeout", () => {
        socket.destroy();
        resolve({ ok: false, message: `dial tcp ${target.podIP}:${port}: i/o timeout` });
      });
      socket.once("error", (err) => resolve({ ok: false, message: err.message }));
    });
  }
  if (probe.exec?.command?.length) {
    const command = probe.exec.command;
    return new Promise((resolve) => {
      execFile(
        "ip",
        ["netns", "exec", target.netns, ...command],
        { timeout: timeoutMs },
        (err, stdout, stderr) =>
          resolve({ ok: !err, message: err ? `${stderr || stdout || err.message}`.slice(0, 512) : "" }),
      );
    });
  }
  return {
    ok: false,
    message: "probe type not supported by the node agent (httpGet, tcpSocket and exec are)",
  };
}
