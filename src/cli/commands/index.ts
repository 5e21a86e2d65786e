import type { CommandSpec } from "../command.js";

/**
 * Every CLI command, loaded lazily so `prolearn --help` stays instant. The key is the command's
 * words ("cluster hdbscan"); the summary is repeated here so the top-level help needs no import.
 */
export const COMMANDS: Record<string, { summary: string; load: () => Promise<CommandSpec> }> = {
};
