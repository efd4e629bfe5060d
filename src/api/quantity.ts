/**
 * Kubernetes quantities for metric values. The HPA reads values with `MilliValue()`, so
 * Governor formats to milli precision: whole numbers plain ("42"), others in milli-units
 * ("41500m"). Never a number in JSON: always the string form.
 */
import { GovernorError } from "../errors.js";

/** Formats a finite number as a quantity string at milli precision (half away from zero). */
export function formatQuantity(value: number): string {
  if (!Number.isFinite(value))
    throw new GovernorError("GOV_ERR_METRIC_BAD_REQUEST", `not a finite number: ${value}`);
  const milli = Math.sign(value) * Math.round(Math.abs(value) * 1000);
  if (!Number.isSafeInteger(milli)) {
    // Beyond 2^53 milli-units whole units are all that is representable anyway.
    return BigInt(Math.round(value)).toString();
  }
  if (milli === 0) return "0";
  return milli % 1000 === 0 ? String(milli / 1000) : `${milli}m`;
}

const SUFFIXES: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};
const QUANTITY_RE =
  /^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$/;

/** The regular expression a quantity string must match (used in CRD schemas too). */
export const QUANTITY_PATTERN = QUANTITY_RE.source;

/** Parses a Kubernetes quantity ("1500m", "2k", "1Gi", "1e3") to a number; undefined if malformed. */
export function parseQuantity(text: string): number | undefined {
  const m = QUANTITY_RE.exec(text.trim());
  if (!m) return undefined;
  const base = Number(m[1]);
  if (m[2]) return Number(`${m[1]}${m[2]}`);
  return base * (SUFFIXES[m[3] ?? ""] ?? 1);
}
