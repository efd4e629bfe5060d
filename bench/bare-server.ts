/**
 * The platform's limit for the "direct API" row: a bare node:https server with the same TLS
 * settings as Governor's (same certificate, client certificates requested, TLS ≥ 1.2)
 * answering every request with the same bytes. Run as its own process by bench/run.ts;
 * prints its port.
 */
import { readFileSync } from "node:fs";
import { createServer } from "node:https";

const [certFile, keyFile, bodyFile] = process.argv.slice(2);
const body = readFileSync(bodyFile!);
const server = createServer(
  {
    cert: readFileSync(certFile!),
    key: readFileSync(keyFile!),
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.2",
    keepAliveTimeout: 65_000,
  },
  (_req, res) => {
    res.writeHead(200, {
      "content-type": "application/json",
      "content-length": body.length,
      "cache-control": "no-cache, private",
    });
    res.end(body);
  },
);
server.listen(0, "127.0.0.1", () => {
  const addr = server.address();
  console.log(typeof addr === "object" && addr ? addr.port : 0);
});
// Exit normally on a signal, so `--cpu-prof` writes its profile.
for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => process.exit(0));
