import { createServer, type Server } from "node:http";
import { expect } from "chai";
import { SOURCE_CREDENTIAL_LABEL } from "../api/common.js";
import { KubeClient } from "../k8s/client.js";
import { UnsafePathError } from "../k8s/paths.js";
import { FakeKube } from "../../test/support/fake-kube.js";
import { listenAndConnect } from "../../test/support/loopback-kubeconfig.js";
import { KubeSecretReader, MAX_CREDENTIAL_BYTES, MAX_SECRET_CACHE_BYTES, headerValue } from "./secrets.js";
import { SourceConfigError } from "./source.js";

/** A fake apiserver holding two source-credential Secrets, recording every path it is asked for. */
function secretStore() {
  const paths: string[] = [];
  const secrets: Record<string, Record<string, string>> = {
    "/api/v1/namespaces/team/secrets/creds": { token: "team-token" },
    "/api/v1/namespaces/victim/secrets/creds": { token: "victim-token" },
  };
  const server = createServer((req, res) => {
    paths.push(req.url ?? "");
    const data = secrets[(req.url ?? "").split("?")[0]!];
    if (!data) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ kind: "Status", reason: "NotFound", message: "not found", code: 404 }));
      return;
    }
    const encoded = Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")]),
    );
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        kind: "Secret",
        metadata: { labels: { [SOURCE_CREDENTIAL_LABEL]: "true" } },
        data: encoded,
      }),
    );
  });
  return { server, paths };
}

describe("Secrets referenced by a MetricMapping", () => {
  let server: Server;
  let paths: string[];
  let client: KubeClient;
  beforeEach(async () => {
    ({ server, paths } = secretStore());
    client = new KubeClient(await listenAndConnect(server));
  });
  afterEach(async () => {
    await client.close();
    server.closeAllConnections();
    server.close();
  });

  it("reads the named Secret of the mapping's own namespace", async () => {
    expect(await new KubeSecretReader(client).read("team", "creds", ["token"])).to.deep.equal({
      token: "team-token",
    });
    expect(paths).to.deep.equal(["/api/v1/namespaces/team/secrets/creds"]);
  });

  const traversals = [
    "../../victim/secrets/creds",
    "x/../../../victim/secrets/creds",
    "%2e%2e/%2e%2e/victim/secrets/creds",
    "..",
    "creds?watch=true",
    "Creds",
  ];
  for (const name of traversals) {
    it(`never reads another namespace's Secret through the name ${JSON.stringify(name)}`, async () => {
      const err = await new KubeSecretReader(client).read("team", name, ["token"]).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(SourceConfigError);
      expect((err as Error).message).to.match(/not a valid object name/);
      expect(paths, "no request reached the apiserver").to.deep.equal([]);
    });
  }

  it("the Kubernetes client refuses any path a URL parser would rewrite, before sending it", async () => {
    for (const path of [
      "/api/v1/namespaces/team/secrets/../../victim/secrets/creds",
      "/api/v1/namespaces/team/secrets/%2E%2e/x",
      "/api/v1/namespaces/team/secrets/./creds",
      "/api/v1/namespaces/team/secrets/a\\..\\b",
      "/api/v1/namespaces/team/secrets/creds#x",
    ]) {
      const err = await client.get(path).catch((e: unknown) => e);
      expect(err, path).to.be.instanceOf(UnsafePathError);
    }
    expect(paths).to.deep.equal([]);
  });
});

/** A Secret object as the apiserver answers it, its values base64-encoded. */
function secret(data: Record<string, string>, labels?: Record<string, string>) {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: labels ? { labels } : {},
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])),
  };
}
const CREDENTIAL = { [SOURCE_CREDENTIAL_LABEL]: "true" };
const path = (ns: string, name: string) => `/api/v1/namespaces/${ns}/secrets/${name}`;
const reason = (p: Promise<unknown>) =>
  p.then(
    () => "read",
    (e: unknown) => {
      expect(e).to.be.instanceOf(SourceConfigError);
      return (e as Error).message;
    },
  );

describe("Secrets as source credentials", () => {
  it("are read only when labelled governor.dev/source-credential=true, and nothing of another Secret is kept", async () => {
    const kube = new FakeKube();
    kube.seed(path("shop", "db-password"), secret({ password: "hunter2" }));
    kube.seed(path("shop", "opted-out"), secret({ token: "t" }, { [SOURCE_CREDENTIAL_LABEL]: "false" }));
    kube.seed(path("shop", "annotated"), {
      ...secret({ token: "t" }),
      metadata: { annotations: CREDENTIAL },
    });
    const reader = new KubeSecretReader(kube);
    expect(await reason(reader.read("shop", "db-password", ["password"]))).to.equal(
      "Secret shop/db-password is not marked as a source credential: label it governor.dev/source-credential=true to let MetricMappings send it",
    );
    expect(await reason(reader.read("shop", "opted-out", ["token"]))).to.match(
      /not marked as a source credential/,
    );
    expect(await reason(reader.read("shop", "annotated", ["token"]))).to.match(
      /not marked as a source credential/,
    );
    expect(reader.cachedBytes, "nothing of a refused Secret is cached").to.equal(0);

    // Once its owner labels it, it is read (a refusal was not cached).
    kube.seed(path("shop", "db-password"), secret({ password: "hunter2" }, CREDENTIAL));
    expect(await reader.read("shop", "db-password", ["password"])).to.deep.equal({ password: "hunter2" });
  });

  it("hands out only the keys asked for, and names a missing one", async () => {
    const kube = new FakeKube();
    kube.seed(path("shop", "api-creds"), secret({ "X-Api-Key": "k", "X-Admin-Token": "admin" }, CREDENTIAL));
    const reader = new KubeSecretReader(kube);
    const got = await reader.read("shop", "api-creds", ["X-Api-Key"]);
    expect(got).to.deep.equal({ "X-Api-Key": "k" });
    expect(await reason(reader.read("shop", "api-creds", ["X-Api-Key", "X-Other"]))).to.equal(
      'Secret shop/api-creds has no key "X-Other"',
    );
    // A key named like an Object property is a key like any other, present or not.
    expect(await reason(reader.read("shop", "api-creds", ["__proto__"]))).to.equal(
      'Secret shop/api-creds has no key "__proto__"',
    );
    expect(kube.calls.filter((c) => c.method === "get")).to.have.length(1);
  });

  it(`refuses a value longer than ${MAX_CREDENTIAL_BYTES / 1024} KiB`, async () => {
    const kube = new FakeKube();
    kube.seed(
      path("shop", "big"),
      secret(
        { fits: "x".repeat(MAX_CREDENTIAL_BYTES), long: "x".repeat(MAX_CREDENTIAL_BYTES + 1) },
        CREDENTIAL,
      ),
    );
    const reader = new KubeSecretReader(kube);
    expect((await reader.read("shop", "big", ["fits"])).fits).to.have.length(MAX_CREDENTIAL_BYTES);
    expect(await reason(reader.read("shop", "big", ["long"]))).to.equal(
      'Secret shop/big key "long" is longer than 16 KiB: too long for a source credential',
    );
    expect(reader.cachedBytes, "the long value is not kept").to.be.below(3 * MAX_CREDENTIAL_BYTES);
  });

  it(`keeps at most ${MAX_SECRET_CACHE_BYTES / 1024 / 1024} MiB of Secrets, the least recently used evicted first`, async () => {
    const kube = new FakeKube();
    // 200 Secrets of 100 KiB each (ten values of 10 KiB): 20 MiB as stored, 40 MiB as JS strings.
    const names = Array.from({ length: 200 }, (_, i) => `creds-${i}`);
    const value = "v".repeat(10 * 1024);
    for (const name of names)
      kube.seed(
        path("shop", name),
        secret(Object.fromEntries(Array.from({ length: 10 }, (_, k) => [`key-${k}`, value])), CREDENTIAL),
      );
    const reader = new KubeSecretReader(kube);
    let most = 0;
    for (const name of names) {
      expect((await reader.read("shop", name, ["key-0"]))["key-0"]).to.equal(value);
      most = Math.max(most, reader.cachedBytes);
    }
    expect(most).to.be.at.most(MAX_SECRET_CACHE_BYTES);
    expect(most, "the cache is used").to.be.above(MAX_SECRET_CACHE_BYTES / 2);
    const gets = () => kube.calls.filter((c) => c.method === "get").length;
    const before = gets();
    await reader.read("shop", names.at(-1)!, ["key-0"]);
    expect(gets(), "the most recent Secret is served from the cache").to.equal(before);
    await reader.read("shop", names[0]!, ["key-0"]);
    expect(gets(), "the oldest was evicted and is read again").to.equal(before + 1);
  });

  it("shares one GET among reads of the same Secret at once, and keeps no failed read", async () => {
    const kube = new FakeKube();
    const reader = new KubeSecretReader(kube);
    expect(await reason(reader.read("shop", "later", ["token"]))).to.equal("Secret shop/later not found");
    kube.seed(path("shop", "later"), secret({ token: "t" }, CREDENTIAL));
    const both = await Promise.all([
      reader.read("shop", "later", ["token"]),
      reader.read("shop", "later", ["token"]),
    ]);
    expect(both).to.deep.equal([{ token: "t" }, { token: "t" }]);
    expect(kube.calls.filter((c) => c.method === "get")).to.have.length(2);
  });
});

describe("header values from Secrets", () => {
  it("are refused with a line break or another control character, and never quoted", () => {
    for (const value of ["k\r\nHost: evil", "k\n", "k\r", "a\u0000b", "a\u007fb", "caf\u00e9", "\u2028"]) {
      expect(() => headerValue(value, 'Secret shop/api key "X-Api-Key"'), JSON.stringify(value))
        .to.throw(SourceConfigError, /^Secret shop\/api key "X-Api-Key" cannot be sent as a header/)
        .with.property("message")
        .that.does.not.include(value);
    }
    expect(headerValue("Bearer a.b-c_d~e/f+g=\t x", "v")).to.equal("Bearer a.b-c_d~e/f+g=\t x");
  });
});
