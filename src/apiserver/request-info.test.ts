import { expect } from "chai";
import { requestInfo } from "./request-info.js";

describe("requestInfo: the attributes kube-apiserver would authorize", () => {
  const cases: [string, string, Partial<ReturnType<typeof requestInfo>>][] = [
    [
      "GET",
      "/apis/history.governor.dev/v1alpha1/namespaces/team-a/metricmappings/shop",
      {
        isResourceRequest: true,
        verb: "get",
        apiGroup: "history.governor.dev",
        apiVersion: "v1alpha1",
        namespace: "team-a",
        resource: "metricmappings",
        name: "shop",
      },
    ],
    [
      "GET",
      "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/pods/*/http_requests",
      {
        isResourceRequest: true,
        verb: "get",
        apiGroup: "custom.metrics.k8s.io",
        apiVersion: "v1beta2",
        namespace: "shop",
        resource: "pods",
        name: "*",
        subresource: "http_requests",
      },
    ],
    [
      "GET",
      "/apis/custom.metrics.k8s.io/v1beta1/namespaces/shop/deployments.apps/web/rps",
      {
        resource: "deployments.apps",
        name: "web",
        subresource: "rps",
        verb: "get",
      },
    ],
    [
      "GET",
      "/apis/custom.metrics.k8s.io/v1beta2/nodes/n1/load",
      {
        namespace: "",
        resource: "nodes",
        name: "n1",
        subresource: "load",
      },
    ],
    [
      "GET",
      "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/metrics/queue_depth",
      {
        namespace: "shop",
        resource: "metrics",
        name: "queue_depth",
        subresource: "",
        verb: "get",
      },
    ],
    [
      "GET",
      "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/queue_depth",
      {
        namespace: "shop",
        resource: "queue_depth",
        name: "",
        verb: "list",
      },
    ],
    ["GET", "/apis/custom.metrics.k8s.io/v1beta2", { isResourceRequest: false, verb: "get" }],
    ["GET", "/apis", { isResourceRequest: false, verb: "get" }],
    ["GET", "/openapi/v2", { isResourceRequest: false, verb: "get", path: "/openapi/v2" }],
  ];
  for (const [method, path, expected] of cases) {
    it(`${method} ${path}`, () => {
      expect(requestInfo(method, path)).to.include(expected);
    });
  }
});
