/**
 * `schedule`: a value that follows the clock — a default, and entries that each start on a
 * cron schedule in a time zone, hold their value for a duration, and ramp to it and back
 * (kube-metrics-adapter's ScalingSchedule; KEDA's cron scaler without ramps). An entry
 * started at `f` is worth, at `t`:
 *
 *   default → value linearly over `rampUp` from f, value until f + duration, then back
 *   to default linearly over `rampDown`; nothing outside [f, f + duration + rampDown).
 *
 * The mapping serves the largest of the entries' worths (over each entry's starts, and over
 * entries), or the default when none is active. Starts come from a maintained cron library
 * (croner) in the IANA time zone, with daylight-saving changes as the time zone database
 * says and croner reads them (docs/reference.md, `schedule`).
 *
 * Cost: an entry's neighbouring starts are looked up when `t` crosses one of them, not on
 * every sample; an expression that never fires is refused when the source is built. Fields
 * are numbers, `*`, lists, ranges and steps only: croner's `L`, `W`, `#` and `?` let a
 * pattern match only inside an hour daylight saving skips, and croner then searches on for
 * seconds before it gives up (the same for some patterns that never match).
 */
import { z } from "zod";
import { Cron } from "croner";
import { Duration, Quantity, durationBetween, durationMs, withRules } from "../api/common.js";
import { parseQuantity } from "../api/quantity.js";
import { boundedText } from "../util/bounded-text.js";
import { type MetricSource, type SampleValue, SourceConfigError } from "./source.js";
import { defineSource } from "./kind.js";

/** Entries in one schedule, at most (each is up to three cron look-ups when a start passes). */
export const MAX_SCHEDULE_ENTRIES = 16;
/** The longest cron expression and time zone name read. */
const MAX_CRON_LENGTH = 100;
const MAX_TIME_ZONE_LENGTH = 64;

/**
 * Five fields (minute hour day-of-month month day-of-week) of numbers, `*`, lists, ranges
 * and steps, one space apart, or a nickname such as `@daily`.
 */
const CRON_SHAPE = "^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9*,/-]+( [0-9*,/-]+){4})$";

/** The largest value (or default) a schedule serves, either way: a ramp between two stays finite. */
const MAX_MAGNITUDE = 2 ** 53;

const Entry = withRules(
  z.object({
    cron: withRules(z.string().min(1).max(MAX_CRON_LENGTH), [
      {
        rule: `self.matches('${CRON_SHAPE}')`,
        message:
          "cron must be five fields (minute hour day-of-month month day-of-week) of numbers, *, lists, ranges and steps, or @hourly, @daily, …",
        check: (self) => new RegExp(CRON_SHAPE).test(self),
      },
    ]),
    duration: withRules(Duration, [durationBetween("1m", "744h", "duration")]).meta({
      description: "How long the entry holds its value from each start (ramp-up included).",
    }),
    value: Quantity.meta({ description: "What the entry is worth while it holds." }),
    rampUp: withRules(Duration, [durationBetween("0s", "24h", "rampUp")])
      .optional()
      .meta({ description: "From the default to the value, linearly, from each start. Default: at once." }),
    rampDown: withRules(Duration, [durationBetween("0s", "24h", "rampDown")])
      .optional()
      .meta({
        description: "From the value back to the default, linearly, after the duration. Default: at once.",
      }),
  }),
  [
    {
      rule: "!has(self.rampUp) || duration(self.rampUp) <= duration(self.duration)",
      message: "rampUp must not be longer than duration",
      check: (e) => e.rampUp === undefined || durationMs(e.rampUp) <= durationMs(e.duration),
    },
  ],
);

/** `spec.source.schedule`. */
export const ScheduleSpec = z
  .object({
    timeZone: z
      .string()
      .max(MAX_TIME_ZONE_LENGTH)
      .regex(/^[A-Za-z0-9_+\-/]+$/, "must be an IANA time zone such as Europe/Berlin or UTC")
      .default("UTC")
      .meta({ description: "The IANA time zone the cron expressions are read in. Default: UTC." }),
    default: Quantity.default("0").meta({ description: "The value while no entry is active. Default: 0." }),
    entries: z.array(Entry).min(1).max(MAX_SCHEDULE_ENTRIES),
  })
  .meta({ description: "A value that follows the clock: entries on cron schedules, with ramps." });

/** A run of starts around a moment: the latest at or before it and the next after it. */
interface Around {
  /** The latest start at or before the moment (ms), or -Infinity. */
  at: number;
  /** The next start after `at` (ms), or Infinity. */
  next: number;
}

/** One entry, ready to evaluate. */
class ScheduleEntry {
  private readonly cron: Cron;
  readonly durationMs: number;
  readonly rampUpMs: number;
  readonly rampDownMs: number;
  readonly value: number;
  /** The last look-ups, by what they were for: around `t`, around `t - rampUp`, around `t - duration - rampDown`. */
  private readonly around: (Around | undefined)[] = [undefined, undefined, undefined];

  constructor(spec: z.output<typeof Entry>, timeZone: string, index: number) {
    const where = `entries[${index}]`;
    try {
      this.cron = new Cron(spec.cron, { timezone: timeZone, paused: true, mode: "5-part" });
    } catch (err) {
      throw new SourceConfigError(`schedule ${where}.cron: ${cronMessage(err)}`);
    }
    // A pattern no date matches (31 February) would be looked for over years on every sample.
    if (!this.cron.nextRun(new Date()) && !this.cron.previousRuns(1, new Date()).length)
      throw new SourceConfigError(`schedule ${where}.cron: "${spec.cron}" never fires`);
    this.value = boundedQuantity(spec.value, `${where}.value`);
    this.durationMs = durationMs(spec.duration);
    this.rampUpMs = spec.rampUp ? durationMs(spec.rampUp) : 0;
    this.rampDownMs = spec.rampDown ? durationMs(spec.rampDown) : 0;
  }

  /** What the entry is worth at `t` (undefined: not active), from `base` (the default). */
  worth(t: number, base: number): number | undefined {
    const activeMs = this.durationMs + this.rampDownMs;
    // The worth is monotonic over the ramp-up, constant over the hold and monotonic over the
    // ramp-down, so its largest over the starts still active is at one of four: the latest
    // start, the oldest still ramping up, the latest past its ramp-up, the oldest active.
    const latest = this.startAtOrBefore(0, t);
    const pastRamp = this.startAtOrBefore(1, t - this.rampUpMs);
    const beforeOldest = this.startAtOrBefore(2, t - activeMs);
    let best: number | undefined;
    for (const f of [latest.at, pastRamp.next, pastRamp.at, beforeOldest.next]) {
      if (!Number.isFinite(f) || f > t || t - f >= activeMs) continue;
      const w = this.profile(t - f, base);
      if (best === undefined || w > best) best = w;
    }
    return best;
  }

  /** Worth `x` ms after a start. */
  private profile(x: number, base: number): number {
    if (x < this.rampUpMs) return base + ((this.value - base) * x) / this.rampUpMs;
    if (x < this.durationMs) return this.value;
    if (x < this.durationMs + this.rampDownMs)
      return this.value + ((base - this.value) * (x - this.durationMs)) / this.rampDownMs;
    return base;
  }

  /** The starts around `t` (ms), looked up again only once `t` has left the last ones found. */
  private startAtOrBefore(slot: number, t: number): Around {
    const known = this.around[slot];
    if (known && known.at <= t && t < known.next) return known;
    // croner answers starts strictly before a moment, to the second: ask from the next second.
    const from = new Date(Math.floor(t / 1000) * 1000 + 1000);
    const at = this.cron.previousRuns(1, from)[0]?.getTime() ?? -Infinity;
    const next = this.cron.nextRun(new Date(Number.isFinite(at) ? at : t))?.getTime() ?? Infinity;
    const found = { at, next };
    this.around[slot] = found;
    return found;
  }
}

/** A quantity's number, refused past {@link MAX_MAGNITUDE} either way (and so never Infinity). */
function boundedQuantity(text: string, what: string): number {
  const v = parseQuantity(text);
  if (v === undefined || !(Math.abs(v) <= MAX_MAGNITUDE))
    throw new SourceConfigError(`schedule ${what} "${boundedText(text, 64)}" is not a quantity within ±2^53`);
  return v;
}

/** croner's message, without its long preamble. */
function cronMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/^CronPattern: /, "").slice(0, 200);
}

/** See the module comment. */
export class ScheduleSource implements MetricSource {
  readonly needsObjects = false;
  private readonly entries: ScheduleEntry[];
  private readonly base: number;

  /** @param now the clock it follows (a test's). @default Date.now */
  constructor(
    spec: z.output<typeof ScheduleSpec>,
    private readonly now: () => number = Date.now,
  ) {
    let timeZone: string;
    try {
      // Its canonical name: croner keeps a formatter per name it is given, so every spelling
      // of a zone (europe/BERLIN) would be one more.
      timeZone = new Intl.DateTimeFormat("en", { timeZone: spec.timeZone }).resolvedOptions().timeZone;
    } catch {
      throw new SourceConfigError(
        `schedule timeZone "${spec.timeZone}" is not a time zone this server knows`,
      );
    }
    this.base = boundedQuantity(spec.default, "default");
    this.entries = spec.entries.map((e, i) => new ScheduleEntry(e, timeZone, i));
  }

  /** The value at `t` (ms since the epoch). */
  valueAt(t: number): number {
    let best: number | undefined;
    for (const e of this.entries) {
      const w = e.worth(t, this.base);
      if (w !== undefined && (best === undefined || w > best)) best = w;
    }
    return best ?? this.base;
  }

  async sample(): Promise<SampleValue> {
    return { kind: "scalar", value: this.valueAt(this.now()) };
  }
}

/** The `schedule` source kind. */
export const scheduleSource = defineSource({
  kind: "schedule",
  schema: ScheduleSpec,
  build: (spec) => new ScheduleSource(spec),
});
