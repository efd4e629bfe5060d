/**
 * What sources that read other MetricMappings share (`formula`, `forecast`): an input's
 * current value as this replica serves it, or an error naming the input; and the refusal
 * of inputs that lead back to the mapping itself.
 */
import { boundedText } from "../util/bounded-text.js";
import type { MappingReader, ServedMapping } from "./kind.js";
import { type SampleValue, SourceConfigError } from "./source.js";

/** How soon a mapping refused for a cycle is built again (the other mappings may have changed). */
const CYCLE_RETRY_MS = 30_000;
/** Mappings a build looks through for a cycle, at most. */
const MAX_CYCLE_SEARCH = 1000;

/** Seconds, for messages. */
const secs = (ms: number) => `${Math.round(ms / 1000)}s`;

/**
 * The current value of the MetricMapping `mapping` of `namespace` (`which` names it in
 * messages, `input queue: MetricMapping queue-depth`), read as an HPA reads it: its sampler
 * keeps its interval. Throws when it does not exist, is not served, is narrowed by the
 * HPA's selector, has no value, or its value is older than its own `staleAfter`.
 */
export function currentValue(
  mappings: MappingReader,
  namespace: string,
  mapping: string,
  which: string,
  now: number,
): { value: SampleValue; served: ServedMapping } {
  const served = mappings.read(namespace, mapping);
  if (typeof served === "string") throw new Error(`${which} ${served}`);
  const { sampler, staleAfterMs } = served;
  sampler.markRead();
  if (sampler.source.perSelector)
    throw new Error(`${which} is sampled per HPA label selector ({{selector}}): it cannot be read`);
  const { last, error } = sampler.state;
  const why = error ? `; its source: ${error}` : "";
  if (!last) throw new Error(boundedText(`${which} has no value yet${why}`));
  const age = now - last.atMs;
  if (age > staleAfterMs)
    throw new Error(
      boundedText(
        `${which} is stale: its value is ${secs(age)} old, past its staleAfter of ${secs(staleAfterMs)}${why}`,
      ),
    );
  return { value: last.value, served };
}

/**
 * Refuses `reads` (the mappings the `kind` source of `name` reads) when they lead back to `name`
 * through the mappings this replica serves. A cycle could never hang a sample (these
 * sources read last values, they never make an input sample) but its values would never be
 * current. The mapping is built again after {@link CYCLE_RETRY_MS}.
 */
export function refuseCycle(
  mappings: MappingReader,
  namespace: string,
  name: string,
  reads: readonly string[],
  kind: string,
): void {
  if (reads.includes(name)) throw new SourceConfigError(`${kind} inputs read the mapping itself (${name})`);
  const from = new Map<string, string>(); // a mapping reached → the one that reads it
  const queue: string[] = [];
  for (const m of reads) {
    if (from.has(m)) continue;
    from.set(m, name);
    queue.push(m);
  }
  for (let i = 0; i < queue.length && i < MAX_CYCLE_SEARCH; i++) {
    const served = mappings.read(namespace, queue[i]!);
    if (typeof served === "string") continue;
    for (const next of served.sampler.source.readsMappings ?? []) {
      if (next === name) {
        const path = [name, queue[i]!];
        for (let at = from.get(queue[i]!)!; at !== name; at = from.get(at)!) path.splice(1, 0, at);
        throw new SourceConfigError(
          `${kind} inputs form a cycle: ${[...path, name].join(" → ")}`,
          CYCLE_RETRY_MS,
        );
      }
      if (from.has(next)) continue;
      from.set(next, queue[i]!);
      queue.push(next);
    }
  }
}
