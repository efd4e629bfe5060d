/**
 * Text that came from outside (a source's answer, an error it caused, a CR field) cut to a
 * short, single-line form before it reaches a condition, an Event, a log line, a cache key
 * or an API answer. Linear in the length kept, whatever the input's length.
 */

/** The longest message about a source kept anywhere (conditions, Events, logs, 503 bodies). */
export const MAX_MESSAGE_CHARS = 1024;

/**
 * `text` on one line (control characters, line and paragraph separators and bidirectional
 * overrides become spaces) and at most `max` characters: a longer text keeps its start and
 * says how much was cut. Only the first `max` characters are ever looked at.
 */
export function boundedText(text: string, max = MAX_MESSAGE_CHARS): string {
  if (text.length <= max) return oneLine(text);
  // The note of what was cut takes at most 30 characters (no string has 10^9); the start
  // kept makes room for it.
  const keep = Math.max(0, max - 30);
  return `${oneLine(text.slice(0, keep))}… (${text.length - keep} more characters)`;
}

function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is replaced
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, " ");
}

/** A short quotation of outside text for a message: JSON-quoted, at most `max` characters. */
export function quote(text: string, max = 64): string {
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
}
