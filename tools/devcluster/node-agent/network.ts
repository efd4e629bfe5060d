/**
 * The node agent's pod network: one Linux bridge on the host holding the gateway address
 * of a private pod CIDR, and per pod a network namespace joined to the bridge by a veth
 * pair, with one address from its node's /24. Service ClusterIPs are added to the bridge as
 * /32 addresses so the host (the agent's service proxy) answers them for pods and for the
 * apiserver alike. Everything is done with `ip` (iproute2) and needs root.
 *
 * Names carry a prefix (default `gov`) so that {@link PodNetwork.teardownAll} can remove
 * exactly what an agent made, also after it crashed: namespaces `<prefix>-<id>`, host
 * veths `<prefix><id>`, the bridge `<prefix>br0`.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { BlockList, isIPv4 } from "node:net";

const exec = promisify(execFile);

/** Runs `ip` with arguments; rejects with its stderr. */
export async function ip(...args: string[]): Promise<string> {
  try {
    const { stdout } = await exec("ip", args, { timeout: 10_000 });
    return stdout;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`ip ${args.join(" ")}: ${stderr || (err as Error).message}`, { cause: err });
  }
}

/** An IPv4 address as a number. */
export function ipToInt(address: string): number {
  return address.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
}

/** A number as an IPv4 address. */
export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join(".");
}

/** A parsed IPv4 CIDR. */
export interface Cidr {
  base: number;
  prefix: number;
}

/** Parses `a.b.c.d/n`; throws on anything else or on a prefix longer than /16. */
export function parsePodCidr(cidr: string): Cidr {
  const [address, bits] = cidr.split("/");
  const prefix = Number(bits);
  if (!address || !isIPv4(address) || !Number.isInteger(prefix) || prefix < 8 || prefix > 16)
    throw new Error(`pod CIDR ${cidr}: want an IPv4 a.b.c.d/n with 8 <= n <= 16 (one /24 per node)`);
  const size = 2 ** (32 - prefix);
  return { base: ipToInt(address) - (ipToInt(address) % size), prefix };
}

/** The /24 of node number `index` (0-based) inside the pod CIDR: the gateway's /24 is skipped. */
export function nodeSubnet(cidr: Cidr, index: number): string {
  const count = 2 ** (24 - cidr.prefix) - 1;
  if (index < 0 || index >= count)
    throw new Error(`node index ${index}: the pod CIDR has room for ${count} nodes`);
  return `${intToIp(cidr.base + (index + 1) * 256)}/24`;
}

/** Options of {@link PodNetwork}. */
export interface PodNetworkOptions {
  /** The pod CIDR, e.g. `10.213.0.0/16`; the host's bridge gets its first address. */
  cidr: string;
  /** Prefix of every name made. @default "gov" */
  prefix?: string;
}

/** See the module comment. */
export class PodNetwork {
  readonly cidr: Cidr;
  readonly prefix: string;
  readonly bridge: string;
  /** The host's address on the bridge: pods' default gateway, and the Nodes' InternalIP. */
  readonly gateway: string;

  constructor(opts: PodNetworkOptions) {
    this.cidr = parsePodCidr(opts.cidr);
    this.prefix = opts.prefix ?? "gov";
    if (!/^[a-z][a-z0-9]{0,3}$/.test(this.prefix))
      throw new Error(`prefix ${this.prefix}: want 1-4 lower-case letters or digits, a letter first`);
    this.bridge = `${this.prefix}br0`;
    this.gateway = intToIp(this.cidr.base + 1);
  }

  /** Refuses a pod CIDR that overlaps a route the host already has (other than our bridge's). */
  async checkNoOverlap(): Promise<void> {
    const routes = await ip("-4", "-o", "route", "show");
    const ours = new BlockList();
    ours.addSubnet(intToIp(this.cidr.base), this.cidr.prefix, "ipv4");
    for (const line of routes.split("\n")) {
      const [dest] = line.split(" ");
      if (!dest || dest === "default" || line.includes(` dev ${this.bridge} `)) continue;
      const [address, bits] = dest.split("/");
      if (!address || !isIPv4(address)) continue;
      const theirs = new BlockList();
      theirs.addSubnet(address, Number(bits ?? 32), "ipv4");
      if (ours.check(address) || theirs.check(intToIp(this.cidr.base)))
        throw new Error(`pod CIDR overlaps the host's route "${line.trim()}": choose another (--pod-cidr)`);
    }
  }

  /** Creates the bridge with the gateway address (idempotent). */
  async ensureBridge(): Promise<void> {
    const links = await ip("-o", "link", "show");
    // A fixed MAC: a bridge otherwise takes the lowest of its ports' MACs, so it changes as
    // pods come and go, and pods' ARP entries for the gateway go stale (connections hang).
    if (!links.includes(` ${this.bridge}:`))
      await ip("link", "add", this.bridge, "address", "02:00:0a:d5:00:01", "type", "bridge");
    const addrs = await ip("-o", "-4", "addr", "show", "dev", this.bridge);
    if (!addrs.includes(` ${this.gateway}/`))
      await ip("addr", "add", `${this.gateway}/${this.cidr.prefix}`, "dev", this.bridge);
    await ip("link", "set", this.bridge, "up");
  }

  /** Makes the host answer `address` (a Service's ClusterIP) on the bridge. */
  async addHostAddress(address: string): Promise<void> {
    await ip("addr", "replace", `${address}/32`, "dev", this.bridge);
  }

  /** Undoes {@link addHostAddress}; quiet when it is gone. */
  async removeHostAddress(address: string): Promise<void> {
    await ip("addr", "del", `${address}/32`, "dev", this.bridge).catch(() => undefined);
  }

  /** The namespace name of pod sandbox `id`. */
  netnsName(id: string): string {
    return `${this.prefix}-${id}`;
  }

  private vethName(id: string): string {
    return `${this.prefix}${id}`;
  }

  /**
   * Creates pod sandbox `id` (8 lower-case hex characters) with `address` (from its node's
   * /24): namespace, loopback up, veth to the bridge, default route via the gateway.
   */
  async createSandbox(id: string, address: string): Promise<void> {
    if (!/^[0-9a-f]{8}$/.test(id)) throw new Error(`sandbox id ${id}: want 8 hex characters`);
    const ns = this.netnsName(id);
    const veth = this.vethName(id);
    await this.deleteSandbox(id);
    await ip("netns", "add", ns);
    try {
      await ip("-n", ns, "link", "set", "lo", "up");
      await ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns);
      await ip("link", "set", veth, "master", this.bridge, "up");
      await ip("-n", ns, "addr", "add", `${address}/${this.cidr.prefix}`, "dev", "eth0");
      await ip("-n", ns, "link", "set", "eth0", "up");
      await ip("-n", ns, "route", "add", "default", "via", this.gateway);
    } catch (err) {
      await this.deleteSandbox(id);
      throw err;
    }
  }

  /** Cuts (or restores) a sandbox's link, as a lost node's pods are cut off. */
  async setSandboxLink(id: string, up: boolean): Promise<void> {
    await ip("link", "set", this.vethName(id), up ? "up" : "down");
  }

  /** Deletes a sandbox: its namespace (the veth goes with it). Quiet when it is gone. */
  async deleteSandbox(id: string): Promise<void> {
    await ip("netns", "del", this.netnsName(id)).catch(() => undefined);
    await ip("link", "del", this.vethName(id)).catch(() => undefined);
  }

  /** Pids of every process inside sandbox `id`. */
  async sandboxPids(id: string): Promise<number[]> {
    const out = await ip("netns", "pids", this.netnsName(id)).catch(() => "");
    return out.split("\n").filter(Boolean).map(Number);
  }

  /**
   * Removes every namespace, veth and the bridge with this prefix, killing what still runs
   * inside: the state a crashed agent may have left.
   */
  async teardownAll(): Promise<{ namespaces: number; links: number }> {
    const namespaces = (await ip("netns", "list").catch(() => ""))
      .split("\n")
      .map((l) => l.split(" ")[0] ?? "")
      .filter((n) => n.startsWith(`${this.prefix}-`));
    for (const ns of namespaces) {
      const pids = (await ip("netns", "pids", ns).catch(() => "")).split("\n").filter(Boolean);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // already gone
        }
      }
      await ip("netns", "del", ns).catch(() => undefined);
    }
    const links = (await ip("-o", "link", "show"))
      .split("\n")
      .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? "")
      .filter((name) => name === this.bridge || new RegExp(`^${this.prefix}[0-9a-f]{8}$`).test(name));
    for (const link of links) await ip("link", "del", link).catch(() => undefined);
    return { namespaces: namespaces.length, links: links.length };
  }
}
