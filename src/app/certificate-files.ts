/**
 * A serving certificate mounted from files (`--tls-cert-file`, `--tls-private-key-file`):
 * a Secret's files change on disk when it is rotated, and the new pair is served from then
 * on; a pair that cannot be read keeps the previous one, and says so.
 */
import { readFileSync, unwatchFile, watchFile } from "node:fs";
import type { Logger } from "pino";
import type { Runnable } from "../util/runnable.js";

/** See the module comment. */
export class CertificateFiles implements Runnable {
  readonly name = "serving certificate files";
  private readonly reload = () => {
    try {
      this.serve({ cert: readFileSync(this.files.cert, "utf8"), key: readFileSync(this.files.key, "utf8") });
      this.log.info("serving certificate reloaded");
    } catch (err) {
      this.log.error({ err }, "could not reload the serving certificate; keeping the previous one");
    }
  };

  constructor(
    private readonly files: { cert: string; key: string },
    private readonly serve: (pair: { cert: string; key: string }) => void,
    private readonly log: Logger,
    private readonly intervalMs = 5000,
  ) {}

  start(): void {
    watchFile(this.files.cert, { interval: this.intervalMs }, this.reload);
    watchFile(this.files.key, { interval: this.intervalMs }, this.reload);
  }

  stop(): void {
    unwatchFile(this.files.cert, this.reload);
    unwatchFile(this.files.key, this.reload);
  }
}
