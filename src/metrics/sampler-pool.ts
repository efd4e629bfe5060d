/**
 * Identical work done once: mappings that would send their source the same request on the
 * same schedule share one {@link Sampler} — one query per interval however many mappings
 * ask. The caller names what makes requests identical (src/controller/mapping-runtime.ts:
 * the namespace, the whole `spec.source`, the subject's kind, `interval` and `staleAfter`;
 * so never across namespaces, whose queries are bound to different namespaces and whose
 * Secrets differ). Each mapping listens to the shared sampler's attempts and reads its
 * state; the sampler stops when the last mapping lets go.
 */
import type { Sampler, SamplerState } from "./sampler.js";

/** A mapping's hold on a sampler. */
export interface SamplerLease {
  readonly sampler: Sampler;
  /** Whether another mapping already held this sampler. */
  readonly joined: boolean;
  /** Stops listening; the last lease of a sampler stops it. */
  release(): Promise<void>;
}

interface Held {
  sampler: Sampler;
  users: number;
}

/** See the module comment. */
export class SamplerPool {
  private readonly shared = new Map<string, Held>();

  /**
   * The sampler for `key` (made by `create` if none runs; `key` undefined: never shared),
   * with `onSample` called after each of its attempts.
   */
  acquire(
    key: string | undefined,
    create: () => Sampler,
    onSample: (state: SamplerState) => void,
  ): SamplerLease {
    let held = key === undefined ? undefined : this.shared.get(key);
    const joined = held !== undefined;
    if (!held) {
      held = { sampler: create(), users: 0 };
      if (key !== undefined) this.shared.set(key, held);
    }
    held.users++;
    held.sampler.listen(onSample);
    return new Lease(this, key, held, joined, onSample);
  }

  /** A lease let go: the last one stops its sampler. */
  async let(key: string | undefined, held: Held): Promise<void> {
    if (--held.users > 0) return;
    if (key !== undefined && this.shared.get(key) === held) this.shared.delete(key);
    await held.sampler.stop();
  }

  /** The samplers that can be shared: how many sample at their interval or idle, and the mappings holding them. */
  counts(): { active: number; idle: number; mappings: number } {
    const out = { active: 0, idle: 0, mappings: 0 };
    for (const e of this.shared.values()) {
      if (e.sampler.idle()) out.idle++;
      else out.active++;
      out.mappings += e.users;
    }
    return out;
  }
}

/** A class rather than closures: 100,000 mappings hold one each. */
class Lease implements SamplerLease {
  private released = false;

  constructor(
    private readonly pool: SamplerPool,
    private readonly key: string | undefined,
    private readonly held: Held,
    readonly joined: boolean,
    private readonly onSample: (state: SamplerState) => void,
  ) {}

  get sampler(): Sampler {
    return this.held.sampler;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.held.sampler.unlisten(this.onSample);
    await this.pool.let(this.key, this.held);
  }
}
