import { createServer, type Server } from "node:net";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { isIP } from "node:net";
import {
  destinationPolicy,
  DEFAULT_DESTINATION_POLICY,
  IPV4_INSIDE_IPV6,
  REFUSED_BY_DEFAULT,
} from "./destination-policy.js";
import { getText } from "./http-client.js";

describe("where sources may connect", () => {
  describe("classifies addresses (values only: nothing is contacted)", () => {
    const refused: [string, RegExp][] = [
      ["127.0.0.1", /loopback/],
      ["127.9.9.9", /loopback/],
      ["::1", /loopback/],
      ["::ffff:127.0.0.1", /loopback/],
      ["169.254.169.254", /cloud metadata/],
      ["fd00:ec2::254", /cloud metadata/],
      ["fe80::1", /link-local/],
      ["0.0.0.0", /unspecified/],
      ["::", /unspecified/],
      ["224.0.0.1", /multicast/],
    ];
    for (const [address, why] of refused)
      it(`refuses ${address} by default`, () => {
        expect(DEFAULT_DESTINATION_POLICY.refusal(address)).to.match(why);
      });
    for (const address of ["10.0.0.5", "172.16.3.4", "192.168.1.1", "203.0.113.7", "fd12::1", "2001:db8::1"])
      it(`allows ${address} by default (cluster and external services)`, () => {
        expect(DEFAULT_DESTINATION_POLICY.refusal(address)).to.equal(undefined);
      });

    describe("every refused IPv4 range, also written inside IPv6 (the policy's own tables)", () => {
      const hex = (x: number, y: number) => ((x << 8) | y).toString(16);
      /** How each IPv6 form of the policy's table writes an IPv4 address. */
      const write: Record<string, (v4: number[]) => string> = {
        "IPv4-mapped ::ffff:0:0/96": (v) => `::ffff:${v.join(".")}`,
        "IPv4-compatible ::/96": (v) => `::${v.join(".")}`,
        "NAT64 64:ff9b::/96": (v) => `64:ff9b::${v.join(".")}`,
        "IPv4-translated ::ffff:0:0:0/96": (v) => `::ffff:0:${hex(v[0]!, v[1]!)}:${hex(v[2]!, v[3]!)}`,
        "6to4 2002::/16": (v) => `2002:${hex(v[0]!, v[1]!)}:${hex(v[2]!, v[3]!)}::1`,
        "Teredo 2001::/32": (v) => {
          const o = v.map((x) => x ^ 0xff);
          return `2001:0:4136:e378:8000:63bf:${hex(o[0]!, o[1]!)}:${hex(o[2]!, o[3]!)}`;
        },
      };
      it("knows how to write each form the policy recognises", () => {
        expect(Object.keys(write)).to.have.members(IPV4_INSIDE_IPV6.map((f) => f.form));
      });
      for (const [cidr, why] of REFUSED_BY_DEFAULT.filter(([c]) => isIP(c.split("/")[0]!) === 4)) {
        // An address inside the range (not its first, which is often special).
        const v4 = cidr
          .split("/")[0]!
          .split(".")
          .map(Number)
          .map((x, i) => (i === 3 && !cidr.endsWith("/32") ? x + 2 : x)); // .1 is ::1 in one form
        it(`refuses ${v4.join(".")} (${cidr}, ${why}) as IPv4 and in every IPv6 form`, () => {
          const words = new RegExp(why.split(" (")[0]!.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
          expect(DEFAULT_DESTINATION_POLICY.refusal(v4.join(".")), "IPv4").to.match(words);
          for (const [form, w] of Object.entries(write))
            expect(DEFAULT_DESTINATION_POLICY.refusal(w(v4)), `${form}: ${w(v4)}`).to.match(words);
        });
      }
      it("refuses the local-use NAT64 prefix whole (where the IPv4 address sits there depends on its length)", () => {
        for (const address of ["64:ff9b:1::7f00:1", "64:ff9b:1:0:7f:0:100::", "64:ff9b:1::a00:5"])
          expect(DEFAULT_DESTINATION_POLICY.refusal(address), address).to.match(/local-use NAT64/);
      });
      it("allows the IPv6 forms of an allowed IPv4 address, and obeys an admin's deny of the IPv4 inside", () => {
        for (const w of Object.values(write))
          expect(DEFAULT_DESTINATION_POLICY.refusal(w([10, 0, 0, 5]))).to.equal(undefined);
        const p = destinationPolicy({ deny: ["10.0.0.0/24"] });
        for (const w of Object.values(write)) expect(p.refusal(w([10, 0, 0, 5]))).to.match(/denied/);
      });
    });

    it("lets an admin allow a refused range, and deny any range; deny wins", () => {
      const p = destinationPolicy({ allow: ["127.0.0.0/8", "10.0.0.0/8"], deny: ["10.96.0.0/12"] });
      expect(p.refusal("127.0.0.1")).to.equal(undefined);
      expect(p.refusal("169.254.169.254")).to.match(/metadata/);
      expect(p.refusal("10.1.2.3")).to.equal(undefined);
      expect(p.refusal("10.96.0.10")).to.match(/denied by --source-deny-cidrs/);
    });

    it("refuses malformed CIDRs with a readable message", () => {
      for (const bad of ["10.0.0.0", "10.0.0.0/33", "fd00::/129", "example.com/8"])
        expect(() => destinationPolicy({ allow: [bad] }), bad).to.throw(/is not a CIDR/);
    });
  });

  describe("at connect time, against a loopback listener that counts connections", () => {
    let server: Server;
    let port: number;
    let connections = 0;
    before(async () => {
      server = createServer((socket) => {
        connections++;
        socket.end("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n42");
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
      port = (server.address() as AddressInfo).port;
    });
    after(() => server.close());
    const get = (host: string, policy = DEFAULT_DESTINATION_POLICY) =>
      getText(`http://${host}:${port}/`, { signal: AbortSignal.timeout(5000), timeoutMs: 5000, policy });

    it("never contacts a refused address, given as an IP or as a name that resolves to it", async () => {
      for (const host of ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"]) {
        const err = await get(host).catch((e: unknown) => e);
        expect((err as Error).message, host).to.match(/refused by Governor's source policy \(loopback/);
      }
      expect(connections).to.equal(0);
    });

    it("connects once an admin allows the range", async () => {
      expect(await get("127.0.0.1", destinationPolicy({ allow: ["127.0.0.0/8"] }))).to.equal("42");
      expect(connections).to.equal(1);
    });
  });
});
