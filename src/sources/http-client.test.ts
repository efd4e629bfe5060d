import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { destinationPolicy } from "./destination-policy.js";
import { HttpStatusError, MAX_POOLS, dispatcherFor, getText, retryAfter } from "./http-client.js";
import { BackendBusyError } from "./source.js";

describe("the sources' HTTP client", () => {
  let server: Server;
  let base: string;
  let sent = 0;
  before(async () => {
    server = createServer((req, res) => {
      const chunk = Buffer.alloc(64 * 1024, "x");
      if (req.url === "/huge-declared") {
        res.writeHead(200, { "content-length": String(200 * 1024 * 1024) });
        res.write(chunk);
        return; // never finishes: the client must not wait for it
      }
      if (req.url === "/huge-chunked") {
        // no content-length: keeps sending until the client hangs up
        res.writeHead(200);
        const pump = () => {
          while (res.write(chunk)) sent += chunk.length;
          sent += chunk.length;
        };
        res.on("drain", pump);
        res.on("close", () => res.off("drain", pump));
        pump();
        return;
      }
      if (req.url === "/stalled-9mib") {
        // 9 MiB sent, then the answer stalls: it holds its bytes until the client gives up.
        res.writeHead(200);
        res.write(Buffer.alloc(9 * 1024 * 1024, "x"));
        return;
      }
      if (req.url === "/busy") {
        res.writeHead(429, { "retry-after": "3" }).end("slow down, token=hunter2");
        return;
      }
      if (req.url === "/down") {
        res.writeHead(503).end("down");
        return;
      }
      if (req.url === "/secret-error") {
        res.writeHead(500).end("internal token=hunter2 at 10.0.0.7");
        return;
      }
      res.writeHead(200).end("42");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });
  it("lets one namespace's sources read at most a quarter of the bytes all may hold at once", async () => {
    const policy = destinationPolicy({ allow: ["127.0.0.0/8"] });
    const get = (tenant: string) =>
      getText(`${base}/stalled-9mib`, {
        signal: AbortSignal.timeout(3000),
        timeoutMs: 3000,
        policy,
        tenant,
        maxBytes: 10 * 1024 * 1024,
      }).then(
        () => "read",
        (err: Error) => err.message,
      );
    // Two stalled 9 MiB answers of one namespace pass its 16 MiB; another namespace's are read.
    const [a1, a2, b1] = await Promise.all([get("team-a"), get("team-a"), get("team-b")]);
    expect([a1, a2].filter((m) => /this namespace's sources are reading 16 MiB/.test(m))).to.have.length(1);
    expect(b1).not.to.match(/this namespace's/);
  });

  const get = (path: string, maxBytes?: number) =>
    getText(`${base}${path}`, {
      signal: AbortSignal.timeout(10_000),
      timeoutMs: 10_000,
      maxBytes,
      policy: destinationPolicy({ allow: ["127.0.0.0/8"] }),
    });

  it("reads a normal answer", async () => {
    expect(await get("/ok")).to.equal("42");
  });

  it("refuses an answer that declares more than the limit, without reading it", async () => {
    const err = await get("/huge-declared").catch((e: unknown) => e);
    expect((err as Error).message).to.match(/larger than 10 MiB, the limit for a source/);
  });

  it("stops reading an endless answer at the limit", async () => {
    const err = await get("/huge-chunked", 1024 * 1024).catch((e: unknown) => e);
    expect((err as Error).message).to.match(/larger than 1 MiB/);
    expect(sent, "bytes the server got out before the client hung up").to.be.lessThan(64 * 1024 * 1024);
  });

  it("says the status of an error answer, never its bytes", async () => {
    const err = await get("/secret-error").catch((e: unknown) => e);
    expect(err).to.be.instanceOf(HttpStatusError);
    expect((err as Error).message).to.equal(`GET ${base}/secret-error: HTTP 500`);
    expect((err as HttpStatusError).body).to.contain("hunter2"); // for callers that know the format
  });

  it("tells a busy backend (429) from a failing one, with how long it asked to be left alone", async () => {
    const busy = await get("/busy").catch((e: unknown) => e);
    expect(busy).to.be.instanceOf(BackendBusyError);
    expect(busy).to.deep.include({
      message: `GET ${base}/busy: HTTP 429, the server is busy`,
      retryAfterMs: 3000,
    });
    const down = await get("/down").catch((e: unknown) => e);
    expect(down).to.be.instanceOf(HttpStatusError); // a 503 that names no Retry-After is a failure
    const now = Date.parse("2026-12-06T12:00:00Z");
    expect(retryAfter("Sun, 06 Dec 2026 12:00:30 GMT", now)).to.equal(30_000);
    expect(retryAfter("Sun, 06 Dec 2026 11:00:00 GMT", now)).to.equal(0);
    for (const junk of [undefined, "", "soon", "-5", "1".repeat(80)])
      expect(retryAfter(junk, now)).to.equal(undefined);
  });

  it("keeps at most MAX_POOLS connection pools however many CAs mappings bring, the recently used ones", () => {
    const policy = destinationPolicy();
    const first = dispatcherFor(policy, "ca-0");
    const hot = dispatcherFor(policy, "ca-hot");
    for (let i = 1; i <= MAX_POOLS * 3; i++) {
      dispatcherFor(policy, `ca-${i}`);
      expect(dispatcherFor(policy, "ca-hot"), "a pool in use is kept").to.equal(hot);
    }
    expect(dispatcherFor(policy, "ca-0"), "the least recently used pool was closed: a new one").to.not.equal(
      first,
    );
  });
});
