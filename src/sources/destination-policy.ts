/**
 * Where sources may connect. A MetricMapping's author chooses the URLs Governor fetches,
 * with Governor's network position, so by default it refuses the addresses no metric
 * source of an application team should need: loopback (Governor's own pod and node),
 * link-local (cloud metadata services at 169.254.169.254 and fd00:ec2::254), unspecified
 * and multicast. An admin changes that with CIDR lists (`--source-allow-cidrs`,
 * `--source-deny-cidrs`): deny wins over allow, allow over the defaults. The check runs on
 * the address actually connected to — IP literals before connecting, names on every
 * address DNS returns — so a name resolving to a refused address is refused too.
 */
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { BlockList, isIP } from "node:net";
import { buildConnector } from "undici";

/** The default refused ranges, with the reason a refusal names. */
const REFUSED_BY_DEFAULT: readonly [cidr: string, why: string][] = [
  ["127.0.0.0/8", "loopback"],
  ["::1/128", "loopback"],
  ["169.254.0.0/16", "link-local (cloud metadata)"],
  ["fe80::/10", "link-local"],
  ["fd00:ec2::254/128", "cloud metadata"],
  ["0.0.0.0/8", "unspecified"],
  ["::/128", "unspecified"],
  ["224.0.0.0/4", "multicast"],
  ["ff00::/8", "multicast"],
];

/** Decides whether a source may connect to an address. */
export interface DestinationPolicy {
  /** Why `address` (an IP address) is refused, or `undefined` when it is allowed. */
  refusal(address: string): string | undefined;
}

/** A CIDR such as `10.0.0.0/8` or `fd00::/8`; throws with a readable message otherwise. */
function addCidr(list: BlockList, cidr: string): void {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(cidr.trim());
  const family = m ? isIP(m[1]!) : 0;
  const prefix = Number(m?.[2]);
  if (!m || family === 0 || prefix > (family === 4 ? 32 : 128))
    throw new Error(`"${cidr}" is not a CIDR such as 10.0.0.0/8 or fd00::/8`);
  list.addSubnet(m[1]!, prefix, family === 4 ? "ipv4" : "ipv6");
}

function contains(list: BlockList, address: string): boolean {
  return list.check(address, isIP(address) === 4 ? "ipv4" : "ipv6");
}

/** An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is judged as the IPv4 address. */
function unmapped(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address.replace(/^\[|\]$/g, "");
}

/**
 * The policy for the given admin lists (CIDRs).
 * @param allow refused-by-default ranges to allow (e.g. `127.0.0.0/8` on a laptop).
 * @param deny more ranges to refuse (e.g. the node network, `10.0.0.0/24`).
 */
export function destinationPolicy(opts: { allow?: readonly string[]; deny?: readonly string[] } = {}) {
  const allow = new BlockList();
  const deny = new BlockList();
  for (const c of opts.allow ?? []) addCidr(allow, c);
  for (const c of opts.deny ?? []) addCidr(deny, c);
  const defaults = REFUSED_BY_DEFAULT.map(([cidr, why]) => {
    const list = new BlockList();
    addCidr(list, cidr);
    return { list, why };
  });
  return {
    refusal(raw: string): string | undefined {
      const address = unmapped(raw);
      if (isIP(address) === 0) return "not an IP address";
      if (contains(deny, address)) return "denied by --source-deny-cidrs";
      if (contains(allow, address)) return undefined;
      const hit = defaults.find((d) => contains(d.list, address));
      return hit ? `${hit.why}; an admin can allow it with --source-allow-cidrs` : undefined;
    },
  } satisfies DestinationPolicy;
}

/** The policy with no admin lists. */
export const DEFAULT_DESTINATION_POLICY: DestinationPolicy = destinationPolicy();

/** The error a refused connection fails with. */
export class DestinationRefusedError extends Error {
  readonly code = "GOV_DESTINATION_REFUSED";
  constructor(address: string, why: string) {
    super(`connecting to ${address} is refused by Governor's source policy (${why})`);
  }
}

/**
 * An undici connector that applies `policy` to the address it connects to. `tls` holds
 * options for HTTPS connections (a CA).
 */
export function guardedConnector(
  policy: DestinationPolicy,
  tls: { ca?: string } = {},
): buildConnector.connector {
  const lookup = (
    hostname: string,
    options: { all?: boolean; family?: number },
    callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void,
  ) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      for (const a of addresses) {
        const why = policy.refusal(a.address);
        if (why) return callback(new DestinationRefusedError(`${hostname} (${a.address})`, why), []);
      }
      if (options.all) return callback(null, addresses);
      const first = addresses[0]!;
      callback(null, first.address, first.family);
    });
  };
  const connect = buildConnector({ ...tls, lookup } as buildConnector.BuildOptions);
  return (opts, callback) => {
    const host = unmapped(opts.hostname);
    if (isIP(host) !== 0) {
      const why = policy.refusal(host);
      if (why) {
        callback(new DestinationRefusedError(host, why), null);
        return;
      }
    }
    return connect(opts, callback);
  };
}
