import { expect } from "chai";
import { UnsafePathError, assertPlainPath } from "./paths.js";

describe("apiserver path guards", () => {
  it("accepts plain absolute paths and refuses dot segments anywhere", () => {
    assertPlainPath("/api/v1/namespaces/a/secrets/b");
    assertPlainPath("/apis/custom.metrics.k8s.io/v1beta2/namespaces/a/pods/*/m");
    for (const bad of ["api/v1", "/a/../b", "/a/./b", "/a/..", "/a/%2e%2e/b", "/a/.%2E/b", "/a?b", "/a\\b"])
      expect(() => assertPlainPath(bad), bad).to.throw(UnsafePathError);
  });
});
