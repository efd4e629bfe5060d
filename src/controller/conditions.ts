/**
 * `metav1.Condition` helpers: set a condition keeping `lastTransitionTime` unless the
 * status changed, as `meta.SetStatusCondition` does. A message is kept to one line of at
 * most 1 KiB (it often quotes a source).
 */
import type { Condition } from "../api/common.js";
import { boundedText } from "../util/bounded-text.js";

/** The fields a reconciler decides; the time and generation are filled in. */
export interface ConditionUpdate {
  type: string;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
}

/** Returns a new list with `update` applied (sorted by type for stable output). */
export function setCondition(
  conditions: readonly Condition[] | undefined,
  update: ConditionUpdate,
  generation: number | undefined,
  now: Date = new Date(),
): Condition[] {
  const list = [...(conditions ?? [])];
  const i = list.findIndex((c) => c.type === update.type);
  const previous = i === -1 ? undefined : list[i];
  const next: Condition = {
    ...update,
    message: boundedText(update.message),
    observedGeneration: generation,
    lastTransitionTime:
      previous && previous.status === update.status
        ? previous.lastTransitionTime
        : now.toISOString().replace(/\.\d+Z$/, "Z"),
  };
  if (i === -1) list.push(next);
  else list[i] = next;
  return list.sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
}

/** A condition by type. */
export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/**
 * Whether two condition lists say the same thing, field by field (times included). Key
 * order does not matter: the apiserver hands conditions back with their keys sorted, so
 * comparing serialized text made every read-back differ, and every reconcile wrote
 * status again.
 */
export function sameConditions(
  a: readonly Condition[] | undefined,
  b: readonly Condition[] | undefined,
  opts: { ignoreMessages?: boolean } = {},
): boolean {
  const text = (list: readonly Condition[] | undefined) =>
    (list ?? [])
      .map((c) =>
        JSON.stringify([
          c.type,
          c.status,
          c.reason,
          opts.ignoreMessages ? null : c.message,
          c.observedGeneration ?? null,
          c.lastTransitionTime,
        ]),
      )
      .sort()
      .join("\n");
  return text(a) === text(b);
}
