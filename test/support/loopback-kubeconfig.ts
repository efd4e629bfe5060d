/**
 * A KubeConfig pointing at a plain-HTTP test server on loopback, for unit tests that
 * run Governor's Kubernetes client against a fake apiserver.
 */
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";

/** Starts `server` on a free loopback port and returns a kubeconfig pointing at it. */
export async function listenAndConnect(server: Server): Promise<KubeConfig> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: "c",
        server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        skipTLSVerify: true,
      },
    ],
    users: [{ name: "u" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return kc;
}
