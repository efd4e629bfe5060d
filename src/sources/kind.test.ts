import { expect } from "chai";
import { backendOf } from "./kind.js";

describe("a source's backend", () => {
  it("is the address's origin, with one Service's spellings alike (a final dot, .svc.cluster.local)", () => {
    expect(backendOf("http://Prometheus.Monitoring.svc.cluster.local.:9090/api")).to.equal(
      "http://prometheus.monitoring.svc:9090",
    );
    expect(backendOf("http://prometheus.monitoring.svc:9090")).to.equal(
      "http://prometheus.monitoring.svc:9090",
    );
    expect(backendOf("https://mimir.example:443/prometheus?x=1")).to.equal("https://mimir.example");
    expect(backendOf("http://10.0.0.5:80/metrics")).to.equal("http://10.0.0.5");
  });
});
