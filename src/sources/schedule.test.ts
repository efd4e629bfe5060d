import { expect } from "chai";
import { Cron } from "croner";
import { ScheduleSource, ScheduleSpec } from "./schedule.js";
import { SourceConfigError } from "./source.js";

const at = (iso: string) => Date.parse(iso);
const schedule = (spec: unknown, now: () => number = Date.now) =>
  new ScheduleSource(ScheduleSpec.parse(spec), now);

describe("the schedule source", () => {
  const weekdays = schedule({
    timeZone: "Europe/Berlin",
    default: "2",
    entries: [{ cron: "0 8 * * 1-5", duration: "10h", value: "40", rampUp: "30m", rampDown: "1h" }],
  });

  it("ramps up from the default at the start, holds, and ramps back down after the duration", () => {
    // Monday 2026-12-07: 08:00 in Berlin is 07:00Z (winter time).
    expect(weekdays.valueAt(at("2026-12-07T06:59:00Z")), "before the start").to.equal(2);
    expect(weekdays.valueAt(at("2026-12-07T07:00:00Z")), "at the start").to.equal(2);
    expect(weekdays.valueAt(at("2026-12-07T07:15:00Z")), "half way up").to.equal(21);
    expect(weekdays.valueAt(at("2026-12-07T07:30:00Z")), "up").to.equal(40);
    expect(weekdays.valueAt(at("2026-12-07T16:59:00Z")), "holding").to.equal(40);
    expect(weekdays.valueAt(at("2026-12-07T17:30:00Z")), "half way down").to.equal(21);
    expect(weekdays.valueAt(at("2026-12-07T18:00:00Z")), "down").to.equal(2);
    expect(weekdays.valueAt(at("2026-12-05T10:00:00Z")), "Saturday").to.equal(2);
  });

  it("follows the time zone across daylight saving time, in spring and in autumn", () => {
    // 2026-03-29 (Sunday) Berlin springs from 02:00 to 03:00; Friday before is winter time, Monday after summer time.
    expect(weekdays.valueAt(at("2026-03-27T07:30:00Z")), "Friday 08:30 CET").to.equal(40);
    expect(weekdays.valueAt(at("2026-03-30T06:00:00Z")), "Monday 08:00 CEST: the start").to.equal(2);
    expect(weekdays.valueAt(at("2026-03-30T06:30:00Z")), "Monday 08:30 CEST").to.equal(40);
    expect(weekdays.valueAt(at("2026-03-30T06:29:00Z")), "an hour earlier in UTC than on Friday").to.be.below(
      40,
    );
    // 2026-10-25 (Sunday) Berlin falls back from 03:00 to 02:00.
    expect(weekdays.valueAt(at("2026-10-23T06:30:00Z")), "Friday 08:30 CEST").to.equal(40);
    expect(weekdays.valueAt(at("2026-10-26T06:30:00Z")), "Monday 07:30 CET: not yet").to.equal(2);
    expect(weekdays.valueAt(at("2026-10-26T07:30:00Z")), "Monday 08:30 CET").to.equal(40);
  });

  it("starts an entry set in the hour spring skips when the clock resumes, and one in the hour autumn repeats once", () => {
    const night = schedule({
      timeZone: "Europe/Berlin",
      entries: [{ cron: "30 2 * * *", duration: "30m", value: "9" }],
    });
    // 02:30 does not exist on 2026-03-29: the entry starts at 03:00 CEST (01:00Z).
    expect(night.valueAt(at("2026-03-29T00:45:00Z"))).to.equal(0);
    expect(night.valueAt(at("2026-03-29T01:10:00Z"))).to.equal(9);
    // 02:30 happens twice on 2026-10-25: the entry runs from the first (00:30Z) only.
    expect(night.valueAt(at("2026-10-25T00:45:00Z"))).to.equal(9);
    expect(night.valueAt(at("2026-10-25T01:45:00Z"))).to.equal(0);
  });

  it("reads daylight saving as croner does: a single time skipped in spring runs as the clock resumes, a step or list there does not; a step repeats in autumn", () => {
    const quarter = schedule({
      timeZone: "Europe/Berlin",
      entries: [{ cron: "0,30 2 * * *", duration: "10m", value: "9" }],
    });
    expect(quarter.valueAt(at("2026-03-29T01:05:00Z")), "no 02:00 or 02:30 on the spring day").to.equal(0);
    expect(quarter.valueAt(at("2026-03-30T00:05:00Z")), "02:00 CEST the day after").to.equal(9);
    const steps = schedule({
      timeZone: "Europe/Berlin",
      entries: [{ cron: "*/15 2 * * *", duration: "5m", value: "9" }],
    });
    expect(steps.valueAt(at("2026-10-25T00:20:00Z")), "02:15 CEST").to.equal(0);
    expect(steps.valueAt(at("2026-10-25T00:47:00Z")), "02:45 CEST").to.equal(9);
    expect(steps.valueAt(at("2026-10-25T01:47:00Z")), "02:45 CET, the hour again").to.equal(9);
  });

  it("serves the largest of one entry's starts still ramping up, holding or ramping down", () => {
    const s = schedule({
      entries: [{ cron: "0,25,48 8 * * *", duration: "30m", value: "100", rampUp: "30m", rampDown: "1h" }],
    });
    // At 08:50: the 08:00 start is a third down (66.67), the 08:25 one 25 of 30 minutes up
    // (83.33), the 08:48 one just begun (6.67).
    expect(s.valueAt(at("2026-12-07T08:50:00Z"))).to.be.closeTo(83.33, 0.01);
  });

  it("serves the largest of overlapping entries, and of one entry's overlapping starts", () => {
    const overlapping = schedule({
      entries: [
        { cron: "0 * * * *", duration: "2h", value: "10", rampUp: "30m" },
        { cron: "0 12 * * *", duration: "1h", value: "25" },
      ],
    });
    // Each hour restarts the first entry's ramp, but the start an hour before still holds 10.
    expect(overlapping.valueAt(at("2026-12-07T10:10:00Z"))).to.equal(10);
    expect(overlapping.valueAt(at("2026-12-07T12:10:00Z"))).to.equal(25);
    expect(overlapping.valueAt(at("2026-12-07T13:10:00Z"))).to.equal(10);
  });

  it("goes below the default while an entry with a lower value holds", () => {
    const night = schedule({ default: "10", entries: [{ cron: "0 22 * * *", duration: "8h", value: "1" }] });
    expect(night.valueAt(at("2026-12-07T23:00:00Z"))).to.equal(1);
    expect(night.valueAt(at("2026-12-08T07:00:00Z"))).to.equal(10);
  });

  it("samples the value of its clock's moment", async () => {
    let now = at("2026-12-07T07:15:00Z");
    const s = schedule(
      {
        timeZone: "Europe/Berlin",
        default: "2",
        entries: [{ cron: "0 8 * * 1-5", duration: "10h", value: "40", rampUp: "30m" }],
      },
      () => now,
    );
    expect(await s.sample()).to.deep.equal({ kind: "scalar", value: 21 });
    now = at("2026-12-07T08:00:00Z");
    expect(await s.sample()).to.deep.equal({ kind: "scalar", value: 40 });
  });

  it("refuses an expression that never fires, an unknown time zone and a malformed expression, saying which", () => {
    const never = () => schedule({ entries: [{ cron: "0 0 31 2 *", duration: "1h", value: "1" }] });
    expect(never).to.throw(SourceConfigError, 'entries[0].cron: "0 0 31 2 *" never fires');
    const zone = () =>
      schedule({ timeZone: "Mars/Olympus", entries: [{ cron: "@daily", duration: "1h", value: "1" }] });
    expect(zone).to.throw(SourceConfigError, 'timeZone "Mars/Olympus"');
    const bad = () => schedule({ entries: [{ cron: "0 25 * * *", duration: "1h", value: "1" }] });
    expect(bad).to.throw(SourceConfigError, "entries[0].cron: Invalid value for hour: 25");
    const huge = () =>
      schedule({ default: "-1e308", entries: [{ cron: "@daily", duration: "1h", value: "1e308" }] });
    expect(huge).to.throw(SourceConfigError, 'default "-1e308" is not a quantity within ±2^53');
  });

  it("reads any spelling of a time zone as the zone itself", () => {
    const spelt = schedule({
      timeZone: "europe/BERLIN",
      entries: [{ cron: "0 8 * * *", duration: "1h", value: "5" }],
    });
    expect(spelt.valueAt(at("2026-12-07T07:30:00Z"))).to.equal(5);
  });

  it("refuses at admission what the schema can tell: fields, bounds, a ramp longer than the entry", () => {
    const problems = (spec: unknown) =>
      ScheduleSpec.safeParse(spec).error?.issues.map((i) => i.message) ?? [];
    for (const cron of ["0 8 * * 0L", "0 8 ? * MON", "0\t8 * * *", "0 0 8 * * *", "0 8 1W * *"])
      expect(problems({ entries: [{ cron, duration: "1h", value: "1" }] }), cron).to.have.length(1);
    expect(problems({ entries: [{ cron: "0 8 * *", duration: "1h", value: "1" }] })[0]).to.match(
      /cron must be five fields/,
    );
    expect(
      problems({ entries: [{ cron: "0 8 * * *", duration: "1h", value: "1", rampUp: "2h" }] }),
    ).to.include("rampUp must not be longer than duration");
    expect(problems({ entries: [{ cron: "0 8 * * *", duration: "800h", value: "1" }] })).to.include(
      "duration must be between 1m and 744h",
    );
    expect(problems({ entries: [] })).to.have.length(1);
    const many = Array.from({ length: 17 }, () => ({ cron: "@daily", duration: "1h", value: "1" }));
    expect(problems({ entries: many })).to.have.length(1);
  });

  it("looks up an entry's starts only when a start passes, not on every sample", () => {
    const s = schedule({ entries: [{ cron: "0 8 * * *", duration: "1h", value: "5", rampUp: "10m" }] });
    const lookups = { n: 0 };
    // eslint-disable-next-line @typescript-eslint/unbound-method -- put back as it was, called with its own `this`
    const { previousRuns } = Cron.prototype;
    Cron.prototype.previousRuns = function (this: Cron, ...args: Parameters<typeof previousRuns>) {
      lookups.n++;
      return previousRuns.apply(this, args);
    };
    try {
      const t0 = at("2026-12-07T12:00:00Z");
      for (let i = 0; i < 2880; i++) s.valueAt(t0 + i * 60_000); // two days, a sample a minute
      // Three look-ups to begin with, and each of the three again as each of two starts passes.
      expect(lookups.n).to.be.within(3, 3 + 3 * 2);
    } finally {
      Cron.prototype.previousRuns = previousRuns;
    }
  });
});
