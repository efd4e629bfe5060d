import { expect } from "chai";
import { readFileSync } from "node:fs";
import { AuthUnavailableError, AuthenticationError, TooManyTokenReviewsError } from "./apiserver/authn.js";
import { errorResponse, RouteKinds } from "./apiserver/metrics-api.js";
import { ErrorCodes } from "./errors.js";
import { KubeApiError } from "./k8s/client.js";
import { MetricBadRequestError, MetricNotFoundError, MetricUnavailableError } from "./metrics/provider.js";
import { SelectorParseError } from "./selectors/label-selector.js";
import { DeadlineExceededError } from "./util/deadline.js";

describe("error codes", () => {
  const cases: [string, Error, number, string][] = [
    [
      "a selector that does not parse",
      new SelectorParseError("found '!', expected a key"),
      400,
      "BadRequest",
    ],
    ["a request that does not fit the metric", new MetricBadRequestError("no such group"), 400, "BadRequest"],
    ["a metric nobody declared", new MetricNotFoundError("no metric x"), 404, "NotFound"],
    ["a metric with no value yet", new MetricUnavailableError("no sample yet"), 503, "ServiceUnavailable"],
    ["a request out of time", new DeadlineExceededError(30_000), 504, "Timeout"],
    ["credentials that are not valid", new AuthenticationError("bad token"), 401, "Unauthorized"],
    ["more new bearer tokens than reviews allowed", new TooManyTokenReviewsError(), 429, "TooManyRequests"],
  ];
  for (const [what, err, status, reason] of cases)
    it(`answers ${what} with ${status} ${reason} and its message`, () => {
      const r = errorResponse(err, RouteKinds.Unknown);
      expect(r.status).to.equal(status);
      expect(r.body).to.include({
        kind: "Status",
        status: "Failure",
        code: status,
        reason,
        message: err.message,
      });
    });

  it("answers an apiserver error, an unchecked authorization and a plain bug with a bare 500, details kept for the log", () => {
    for (const err of [
      new KubeApiError(403, "Forbidden", "secrets is forbidden: User cannot get secrets in victim"),
      new AuthUnavailableError("token review failed"),
      new TypeError("x is undefined"),
    ]) {
      const r = errorResponse(err, RouteKinds.Unknown);
      expect(r.status).to.equal(500);
      expect(r.body).to.include({ reason: "InternalError", message: "internal error" });
      expect(r.cause).to.equal(err);
    }
  });

  it("documents every code with the answer the API gives (docs/errors.md is generated from the same table)", () => {
    const doc = readFileSync(new URL("../docs/errors.md", import.meta.url), "utf8");
    for (const [code, entry] of Object.entries(ErrorCodes)) {
      const answer =
        "answer" in entry ? `${entry.answer.status} ${entry.answer.reason}` : "500 InternalError";
      expect(doc).to.include(`| \`${code}\` | ${entry.meaning} | ${answer} |`);
    }
  });
});
