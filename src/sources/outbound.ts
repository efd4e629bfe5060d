/**
 * What a source that connects out (prometheus, http, scrape) is given: the mapping's
 * namespace, its Secret reader, the destination policy and the answer decoder.
 */
import type { AnswerDecoder } from "./answer-decoder.js";
import type { DestinationPolicy } from "./destination-policy.js";
import type { SecretReader } from "./secrets.js";

/** What a source that makes outbound requests needs from its mapping and the operator. */
export interface OutboundContext {
  /** The mapping's namespace (its Secrets are read there only). */
  namespace: string;
  secrets: SecretReader;
  /** Which addresses it may connect to (src/sources/destination-policy.ts). */
  policy?: DestinationPolicy;
  /** The largest answer read. */
  maxResponseBytes?: number;
  /** Decodes answers off the event loop when they are large. @default sharedAnswerDecoder() */
  decoder?: AnswerDecoder;
}
