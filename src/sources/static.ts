/**
 * `static`: a fixed value, for tests, demos and manual overrides. It doubles as the
 * reference implementation of {@link MetricSource}.
 */
import { z } from "zod";
import { Quantity } from "../api/common.js";
import { parseQuantity } from "../api/quantity.js";
import { type MetricSource, type SampleValue, SourceConfigError } from "./source.js";
import { defineSource } from "./kind.js";

/** `spec.source.static`. */
export const StaticSpec = z
  .object({ value: Quantity })
  .meta({ description: "A fixed value (tests, demos, manual overrides)." });

/** See the module comment. */
export class StaticSource implements MetricSource {
  readonly needsObjects = false;
  private readonly value: number;

  constructor(spec: { value: string }) {
    const v = parseQuantity(spec.value);
    if (v === undefined) throw new SourceConfigError(`static value "${spec.value}" is not a quantity`);
    this.value = v;
  }

  async sample(): Promise<SampleValue> {
    return { kind: "scalar", value: this.value };
  }
}

/** The `static` source kind. */
export const staticSource = defineSource({
  kind: "static",
  schema: StaticSpec,
  build: (spec) => new StaticSource(spec),
});
