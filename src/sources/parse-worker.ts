/**
 * The parse worker's thread: decodes the answers too large for the event loop
 * (src/sources/answer-decoder.ts sends them). Its heap is capped by the thread's resource
 * limits and its time by the decoder, which terminates the thread past its budget.
 */
import { parentPort } from "node:worker_threads";
import { boundedText } from "../util/bounded-text.js";
import { type AnswerJob, decodeAnswer } from "./answers.js";

parentPort!.on("message", (m: { id: number; job: AnswerJob; body: Uint8Array }) => {
  try {
    const result = decodeAnswer(m.body, m.job as never);
    parentPort!.postMessage({ id: m.id, result });
  } catch (err) {
    parentPort!.postMessage({
      id: m.id,
      error: boundedText(err instanceof Error ? err.message : String(err)),
    });
  }
});

parentPort!.postMessage("ready");
