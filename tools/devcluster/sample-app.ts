/**
 * The sample application image (`governor-sample-app`) the node agent runs: a
 * prom-client `/metrics` with an `http_requests_total{code="200"}` counter that grows by
 * `--rps` per second (change it at run time with `POST /load?rps=N`), and `/healthz`.
 * SIGTERM closes the listener and exits. Usage: `sample-app.js [--port 8080] [--rps 0]`.
 */
import { requestCounterApp } from "../demo/fake-app.js";

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isFinite(value) || value < 0) throw new Error(`--${name}: want a number >= 0`);
  return value;
};

const port = arg("port", 8080);
let rps = arg("rps", 0);
const app = requestCounterApp();
app.server.removeAllListeners("request");
app.server.on("request", (req, res) => {
  const url = new URL(req.url ?? "/", "http://pod");
  if (url.pathname === "/healthz") return void res.end("ok");
  if (url.pathname === "/load" && req.method === "POST") {
    const next = Number(url.searchParams.get("rps"));
    if (!Number.isFinite(next) || next < 0) return void res.writeHead(400).end("rps: want a number >= 0\n");
    rps = next;
    return void res.end(`rps=${rps}\n`);
  }
  if (url.pathname === "/metrics")
    return void app.registry
      .metrics()
      .then((t) => res.writeHead(200, { "content-type": app.registry.contentType }).end(t));
  res.writeHead(404).end();
});
const timer = setInterval(() => app.counter.inc({ code: "200" }, rps / 10), 100);
app.server.listen(port, () => console.log(JSON.stringify({ msg: "sample app listening", port, rps })));
process.once("SIGTERM", () => {
  clearInterval(timer);
  app.server.close(() => process.exit(0));
  app.server.closeAllConnections();
});
