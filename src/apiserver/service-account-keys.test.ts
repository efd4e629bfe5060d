import { expect } from "chai";
import { KubeApiError, type KubeApi } from "../k8s/client.js";
import { KubeServiceAccountKeySource } from "./service-account-keys.js";

/** Answers GETs of the two discovery paths from `answers`; a number is an error status. */
function fakeClient(answers: Record<string, unknown>) {
  const asked: string[] = [];
  const client: Pick<KubeApi, "request"> = {
    request: (async (method: string, path: string) => {
      asked.push(`${method} ${path}`);
      const answer = answers[path];
      if (typeof answer === "number")
        throw new KubeApiError(answer, "Forbidden", `${method} ${path}: ${answer}`);
      if (answer === undefined) throw new KubeApiError(404, "NotFound", `${method} ${path}: 404`);
      return answer;
    }) as KubeApi["request"],
  };
  return { client, asked };
}

const JWK = { kty: "RSA", kid: "k1", alg: "RS256", use: "sig", n: "AQAB", e: "AQAB" };

describe("the service-account issuer's keys, read through the apiserver", () => {
  it("reads the issuer from the discovery document and the keys from /openid/v1/jwks (not the public jwks_uri)", async () => {
    const { client, asked } = fakeClient({
      "/.well-known/openid-configuration": {
        issuer: "https://kubernetes.default.svc.cluster.local",
        jwks_uri: "https://203.0.113.9:6443/openid/v1/jwks",
      },
      "/openid/v1/jwks": { keys: [JWK, "junk", null] },
    });
    const read = await new KubeServiceAccountKeySource(client).read();
    expect(read).to.deep.equal({ issuer: "https://kubernetes.default.svc.cluster.local", keys: [JWK] });
    expect(asked).to.deep.equal(["GET /.well-known/openid-configuration", "GET /openid/v1/jwks"]);
  });

  it("fails, for the caller to fall back on, when either cannot be read or says nothing usable", async () => {
    const cases: Record<string, unknown>[] = [
      { "/.well-known/openid-configuration": 403 },
      {},
      { "/.well-known/openid-configuration": { issuer: "https://k" }, "/openid/v1/jwks": 403 },
      { "/.well-known/openid-configuration": { jwks_uri: "x" }, "/openid/v1/jwks": { keys: [JWK] } },
      { "/.well-known/openid-configuration": { issuer: "https://k" }, "/openid/v1/jwks": { keys: "x" } },
    ];
    for (const answers of cases) {
      const { client } = fakeClient(answers);
      let failed = false;
      await new KubeServiceAccountKeySource(client).read().catch(() => (failed = true));
      expect(failed, JSON.stringify(answers)).to.equal(true);
    }
  });
});
