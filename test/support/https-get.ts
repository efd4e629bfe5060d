/**
 * A tiny HTTPS GET for tests and the demo: optional client certificate, extra headers,
 * the answer's status, headers and parsed JSON (or text).
 */
import { type Agent, request } from "node:https";

/** Options of {@link httpsGet}. */
export interface HttpsGetOptions {
  ca?: string;
  cert?: string;
  key?: string;
  headers?: Record<string, string | string[]>;
  servername?: string;
  timeoutMs?: number;
  /** A keep-alive agent to reuse connections. @default a fresh connection per request */
  agent?: Agent;
}

/** The answer of {@link httpsGet}. */
export interface HttpsGetResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: any;
}

/** GETs `url` on a fresh connection. */
export function httpsGet(url: string, opts: HttpsGetOptions = {}): Promise<HttpsGetResult> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: "GET",
        agent: opts.agent ?? false,
        ca: opts.ca,
        cert: opts.cert,
        key: opts.key,
        servername: opts.servername,
        headers: opts.headers,
        timeout: opts.timeoutMs ?? 10_000,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (text += d));
        res.on("end", () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on("error", reject);
    req.end();
  });
}
