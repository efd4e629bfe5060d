// Mocha's spec output, then one closing line CI reads: "N passed, N failed[, N skipped]".
"use strict";
// eslint-disable-next-line @typescript-eslint/no-require-imports -- mocha loads reporters with require()
const Mocha = require("mocha");

const { EVENT_RUN_END } = Mocha.Runner.constants;

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(EVENT_RUN_END, () => {
      const { passes, failures, pending } = runner.stats ?? this.stats;
      // After Spec's epilogue, so it is the last line of the run.
      process.stdout.write(
        `\n${passes} passed, ${failures} failed${pending ? `, ${pending} skipped` : ""}\n`,
      );
    });
  }
}

module.exports = SummaryReporter;
