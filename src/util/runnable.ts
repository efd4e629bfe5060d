/**
 * A part of the running operator that the manager (src/app/manager.ts) starts and stops:
 * in the order added, stopped in reverse. One that needs leadership says so, and is
 * started when this replica becomes the leader and stopped when it stops leading — it
 * never asks whether it leads.
 */
export interface Runnable {
  /** For logs: what it is. */
  readonly name: string;
  /** Runs only while this replica leads. @default false */
  readonly needsLeader?: boolean;
  /** Resolves once it runs (a runnable after it may rely on it). */
  start(): Promise<void> | void;
  /** Resolves once it has stopped; it may be started again. */
  stop(): Promise<void> | void;
}
