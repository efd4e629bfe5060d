import type { ESLint } from "eslint";

/** The floors of src/, lowest first (see eslint-layers.js). */
export declare const FLOORS: string[][];
/** The plugin with the `layers` rule. */
declare const plugin: ESLint.Plugin;
export default plugin;
