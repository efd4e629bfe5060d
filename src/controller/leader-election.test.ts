import { expect } from "chai";
import { pino } from "pino";
import { KubeApiError, type KubeClient } from "../k8s/client.js";
import { LeaderElector, type LeaderElectionOptions } from "./leader-election.js";

/** An in-memory Lease endpoint with optimistic concurrency and a switch that makes requests hang. */
class FakeLeaseApi {
  lease?: { metadata: Record<string, unknown>; spec: Record<string, unknown> };
  rv = 0;
  hang = false;

  client(): KubeClient {
    const request = async (
      method: string,
      _path: string,
      opts: { body?: unknown; timeoutMs?: number } = {},
    ) => {
      if (this.hang)
        await new Promise((_, reject) =>
          setTimeout(() => reject(new Error("timed out")), opts.timeoutMs ?? 30_000),
        );
      const body = opts.body as
        { metadata: Record<string, unknown>; spec: Record<string, unknown> } | undefined;
      if (method === "GET") {
        if (!this.lease) throw new KubeApiError(404, "NotFound", "not found");
        return structuredClone(this.lease);
      }
      if (method === "POST" && this.lease) throw new KubeApiError(409, "AlreadyExists", "exists");
      if (method === "PUT" && body!.metadata.resourceVersion !== String(this.rv))
        throw new KubeApiError(409, "Conflict", "conflict");
      this.lease = { metadata: { ...body!.metadata, resourceVersion: String(++this.rv) }, spec: body!.spec };
      return structuredClone(this.lease);
    };
    return {
      request,
      get: (path: string) => request("GET", path),
      replace: (path: string, body: unknown) => request("PUT", path, { body }),
    } as unknown as KubeClient;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function elector(
  api: FakeLeaseApi,
  identity: string,
  log: string[],
  now?: () => number,
  client = api.client(),
) {
  const opts: LeaderElectionOptions = {
    namespace: "ns",
    name: "lease",
    identity,
    leaseDurationMs: 1000,
    renewDeadlineMs: 600,
    retryPeriodMs: 100,
    onStartedLeading: () => log.push(`${identity}+`),
    onStoppedLeading: () => log.push(`${identity}-`),
  };
  return new LeaderElector(client, opts, pino({ level: "silent" }), now);
}

describe("LeaderElector", function () {
  this.timeout(10_000);

  it("a follower whose clock is an hour ahead does not take over a lease its holder keeps renewing", async () => {
    const api = new FakeLeaseApi();
    const log: string[] = [];
    const a = elector(api, "a", log);
    a.start();
    await sleep(300);
    const b = elector(api, "b", log, () => Date.now() + 3_600_000);
    b.start();
    await sleep(1800);
    expect(log).to.deep.equal(["a+"]);
    expect(b.isLeader).to.equal(false);
    await a.stop();
    await b.stop();
  });

  it("a follower takes over once the record has not changed for the lease duration on its own clock", async () => {
    const api = new FakeLeaseApi();
    const log: string[] = [];
    const a = elector(api, "a", log);
    a.start();
    await sleep(300);
    // The holder disappears without releasing (a kill -9), its renewTime an hour in the future.
    a["stopped"] = true;
    clearTimeout(a["timer"]);
    clearTimeout(a["watchdog"]);
    api.lease!.spec.renewTime = new Date(Date.now() + 3_600_000).toISOString();
    const started = Date.now();
    const b = elector(api, "b", log);
    b.start();
    while (!b.isLeader && Date.now() - started < 3000) await sleep(20);
    const took = Date.now() - started;
    expect(b.isLeader).to.equal(true);
    expect(took).to.be.within(1000, 1600);
    await b.stop();
  });

  it("a leader whose renew hangs stops leading at the renew deadline, before the lease can expire elsewhere", async () => {
    const api = new FakeLeaseApi();
    const log: string[] = [];
    const a = elector(api, "a", log);
    a.start();
    await sleep(300);
    expect(a.isLeader).to.equal(true);
    const lastRenew = Date.parse(String(api.lease!.spec.renewTime));
    api.hang = true;
    while (a.isLeader) await sleep(10);
    const steppedDownAfter = Date.now() - lastRenew;
    // Leadership ends within the renew deadline (600 ms) of the last renew's start, plus a
    // tick; the lease (1000 ms) has not expired for anyone else yet.
    expect(steppedDownAfter).to.be.below(1000);
    expect(steppedDownAfter).to.be.at.least(500);
    api.hang = false;
    await a.stop();
  });
});
