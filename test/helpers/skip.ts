/**
 * The one way a test is skipped here: its name stays the same, and `{ skip: skipUnless(present,
 * reason) }` hands node:test the reason, which it prints as `# SKIP <reason>`. The reason says
 * what is missing and how to get it (`.ci/run` installs every system dependency).
 */
export function skipUnless(present: unknown, reason: string): string | false {
  return present ? false : reason;
}
