import { expect } from "chai";
import type { KubeClient } from "../k8s/client.js";
import { KubeTokenReviewer } from "./delegated-auth.js";

/** A client whose TokenReview answer is `body` as the apiserver sent it (JSON text, parsed as the client does). */
const answering = (body: string) =>
  ({ request: async () => JSON.parse(body) as unknown }) as unknown as KubeClient;

describe("KubeTokenReviewer", () => {
  it("keeps a reviewed user's extras named __proto__ or constructor as plain keys, and only string lists", async () => {
    const reviewer = new KubeTokenReviewer(
      answering(
        `{"status":{"authenticated":true,"user":{"username":"oidc:alice","groups":["dev"],` +
          `"extra":{"__proto__":["p"],"constructor":["c"],"scopes":["a",1],"odd":"not a list"}}}}`,
      ),
    );
    const user = await reviewer.review("token");
    expect(user?.name).to.equal("oidc:alice");
    expect(Object.keys(user!.extra).sort()).to.deep.equal(["__proto__", "constructor", "scopes"]);
    expect(user!.extra["__proto__"]).to.deep.equal(["p"]);
    expect(user!.extra["scopes"]).to.deep.equal(["a"]);
    expect(JSON.parse(JSON.stringify(user!.extra))).to.have.own.property("__proto__");
  });

  it("answers undefined for a token the apiserver did not authenticate", async () => {
    const reviewer = new KubeTokenReviewer(answering(JSON.stringify({ status: { authenticated: false } })));
    expect(await reviewer.review("junk")).to.equal(undefined);
  });
});
