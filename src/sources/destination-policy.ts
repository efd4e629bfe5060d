/**
 * Where sources may connect. A MetricMapping's author chooses the URLs Governor fetches,
 * with Governor's network position, so by default it refuses the addresses no metric
 * source of an application team should need: loopback (Governor's own pod and node),
 * link-local (cloud metadata services at 169.254.169.254 and fd00:ec2::254), the other
 * clouds' metadata addresses, unspecified and multicast — also when an IPv4 address is
 * written inside an IPv6 one (mapped, compatible, NAT64, 6to4, Teredo). An admin changes that with CIDR lists (`--source-allow-cidrs`,
 * `--source-deny-cidrs`): deny wins over allow, allow over the defaults. The check runs on
 * the address actually connected to — IP literals before connecting, names on every
 * address DNS returns — so a name resolving to a refused address is refused too.
 */
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { BlockList, isIP } from "node:net";
import { buildConnector } from "undici";

/** The default refused ranges, with the reason a refusal names (tests iterate this table). */
export const REFUSED_BY_DEFAULT: readonly [cidr: string, why: string][] = [
  ["127.0.0.0/8", "loopback"],
  ["::1/128", "loopback"],
  ["169.254.0.0/16", "link-local (cloud metadata)"],
  ["fe80::/10", "link-local"],
  ["fd00:ec2::254/128", "cloud metadata"],
  ["100.100.100.200/32", "cloud metadata (Alibaba Cloud)"],
  ["168.63.129.16/32", "cloud metadata (Azure WireServer)"],
  // Where an IPv4 address sits inside a local-use NAT64 prefix depends on its length (RFC
  // 6052): refused whole rather than guessed.
  ["64:ff9b:1::/48", "local-use NAT64 (an IPv4 address inside it cannot be told)"],
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
 * The IPv6 forms that carry an IPv4 address a packet can end up at, and where in the 16
 * bytes it sits (tests iterate this table): a refused IPv4 address is refused in each.
 */
export const IPV4_INSIDE_IPV6: readonly {
  form: string;
  /** Whether the address has this form. */
  matches: (b: Uint8Array) => boolean;
  /** The IPv4 address's bytes. */
  ipv4: (b: Uint8Array) => number[];
}[] = [
  {
    form: "IPv4-mapped ::ffff:0:0/96",
    matches: (b) => zeros(b, 0, 10) && b[10] === 0xff && b[11] === 0xff,
    ipv4: (b) => [...b.subarray(12)],
  },
  {
    form: "IPv4-compatible ::/96",
    matches: (b) => zeros(b, 0, 12) && !(zeros(b, 12, 15) && b[15]! <= 1), // not :: or ::1 (own rows)
    ipv4: (b) => [...b.subarray(12)],
  },
  {
    form: "NAT64 64:ff9b::/96",
    matches: (b) => b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(b, 4, 12),
    ipv4: (b) => [...b.subarray(12)],
  },
  {
    form: "IPv4-translated ::ffff:0:0:0/96",
    matches: (b) => zeros(b, 0, 8) && b[8] === 0xff && b[9] === 0xff && b[10] === 0 && b[11] === 0,
    ipv4: (b) => [...b.subarray(12)],
  },
  {
    form: "6to4 2002::/16",
    matches: (b) => b[0] === 0x20 && b[1] === 0x02,
    ipv4: (b) => [...b.subarray(2, 6)],
  },
  {
    form: "Teredo 2001::/32",
    matches: (b) => b[0] === 0x20 && b[1] === 0x01 && b[2] === 0 && b[3] === 0,
    ipv4: (b) => [...b.subarray(12)].map((x) => x ^ 0xff), // the client's address, obfuscated
  },
];

function zeros(b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

/** The 16 bytes of an IPv6 address (as `isIP` accepts it: `::`, a dotted tail, a zone). */
function ipv6Bytes(address: string): Uint8Array | undefined {
  let text = address.replace(/%.*$/, "");
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (tail) {
    const [a, b, c, d] = tail.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, tail.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, rest] = text.split("::") as [string, string | undefined];
  const words = (part: string) => (part === "" ? [] : part.split(":").map((w) => parseInt(w, 16)));
  const left = words(head);
  const right = rest === undefined ? [] : words(rest);
  const all =
    rest === undefined ? left : [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
  if (all.length !== 8 || all.some((w) => !(w >= 0 && w <= 0xffff))) return undefined;
  const out = new Uint8Array(16);
  all.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** The IPv4 address an IPv6 address carries, and in which form, if it is one of those. */
function embeddedIPv4(address: string): { ipv4: string; form: string } | undefined {
  if (isIP(address) !== 6) return undefined;
  const bytes = ipv6Bytes(address);
  if (!bytes) return undefined;
  const hit = IPV4_INSIDE_IPV6.find((f) => f.matches(bytes));
  return hit && { ipv4: hit.ipv4(bytes).join("."), form: hit.form };
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
  const byDefault = (address: string) => defaults.find((d) => contains(d.list, address))?.why;
  const allowIt = "; an admin can allow it with --source-allow-cidrs";
  return {
    refusal(raw: string): string | undefined {
      const address = unmapped(raw);
      if (isIP(address) === 0) return "not an IP address";
      // An IPv4 address written inside an IPv6 one is judged as well: a deny of either wins,
      // then an allow of either, then the defaults for either.
      const inner = embeddedIPv4(address);
      const as = inner ? ` (${inner.ipv4} as ${inner.form})` : "";
      if (contains(deny, address) || (inner && contains(deny, inner.ipv4)))
        return `denied by --source-deny-cidrs${as}`;
      if (contains(allow, address) || (inner && contains(allow, inner.ipv4))) return undefined;
      const own = byDefault(address);
      if (own) return `${own}${allowIt}`;
      const why = inner && byDefault(inner.ipv4);
      return why ? `${why}${as}${allowIt}` : undefined;
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
