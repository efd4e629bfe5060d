import { createServer, type Server } from "node:http";
import { expect } from "chai";
import { KubeClient } from "../k8s/client.js";
import { UnsafePathError } from "../k8s/paths.js";
import { listenAndConnect } from "../testing/loopback-kubeconfig.js";
import { KubeSecretReader } from "./secrets.js";
import { SourceConfigError } from "./source.js";

/** A fake apiserver holding two Secrets, recording every path it is asked for. */
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
    res.end(JSON.stringify({ kind: "Secret", data: encoded }));
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
    expect(await new KubeSecretReader(client).read("team", "creds")).to.deep.equal({ token: "team-token" });
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
      const err = await new KubeSecretReader(client).read("team", name).catch((e: unknown) => e);
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
