/** The suites' polling helper lives with the unit tests' (src/testing/eventually.ts). */
export { eventually } from "../../src/testing/eventually.js";
