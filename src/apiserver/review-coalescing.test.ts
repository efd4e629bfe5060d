import { expect } from "chai";
import type { IncomingMessage } from "node:http";
import { DelegatingAuthenticator, type UserInfo } from "./authn.js";
import { DelegatingAuthorizer, type Decision, type SubjectAccessReviewSpec } from "./authz.js";
import { requestInfo } from "./request-info.js";

/** A reviewer that answers after `delayMs` and counts what it was asked. */
function slowReviewer<T>(answer: T, delayMs = 20) {
  const asked: unknown[] = [];
  return {
    asked,
    review: (x: unknown) => {
      asked.push(x);
      return new Promise<T>((r) => setTimeout(() => r(answer), delayMs));
    },
  };
}

const user: UserInfo = {
  name: "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
  groups: ["system:authenticated"],
  extra: {},
};

describe("access and token reviews under a burst", () => {
  it("100 concurrent requests needing the same SubjectAccessReview make one review, and all get its answer", async () => {
    const reviewer = slowReviewer<Decision>({ allowed: true, reason: "rbac" });
    const authz = new DelegatingAuthorizer({ review: (s: SubjectAccessReviewSpec) => reviewer.review(s) });
    const info = requestInfo(
      "GET",
      "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/pods/*/http_requests",
    );
    const other = requestInfo(
      "GET",
      "/apis/custom.metrics.k8s.io/v1beta2/namespaces/other/pods/*/http_requests",
    );
    const decisions = await Promise.all([
      ...Array.from({ length: 100 }, () => authz.authorize(user, info)),
      authz.authorize(user, other),
    ]);
    expect(reviewer.asked).to.have.length(2);
    expect(decisions.every((d) => d.allowed)).to.equal(true);
  });

  it("100 concurrent requests with the same bearer token make one TokenReview", async () => {
    const reviewer = slowReviewer<UserInfo | undefined>(user);
    const authn = new DelegatingAuthenticator({ review: (t: string) => reviewer.review(t) });
    const req = { headers: { authorization: "Bearer abc.def" }, socket: {} } as unknown as IncomingMessage;
    const users = await Promise.all(
      Array.from({ length: 100 }, () => Promise.resolve(authn.authenticate(req))),
    );
    expect(reviewer.asked).to.have.length(1);
    expect(users.every((u) => u.name === user.name)).to.equal(true);
  });
});
