// Every `prolearn ...` command line in the README and docs/ names a real command and only options
// that command has, so the docs cannot drift from the CLI unnoticed.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { COMMANDS } from "../../src/cli/commands/index.js";

const repoRoot = path.resolve(import.meta.dirname, "../..");

test("the README and docs/ use only commands and options the CLI has", async () => {
  const files = [
    "README.md",
    ...readdirSync(path.join(repoRoot, "docs"))
      .filter((f) => f.endsWith(".md"))
      .map((f) => path.join("docs", f)),
  ];
  const names = [...Object.keys(COMMANDS), "help"].sort((a, b) => b.length - a.length);
  const problems: string[] = [];
  let checked = 0;
  for (const file of files) {
    const text = readFileSync(path.join(repoRoot, file), "utf8");
    for (const match of text.matchAll(/(?:^|[`\s(])(?:npx )?prolearn ([a-z][^\n`|]*)/gm)) {
      const rest = match[1]!;
      const command = names.find((n) => rest === n || rest.startsWith(`${n} `));
      if (!command) {
        problems.push(`${file}: unknown command in "prolearn ${rest.slice(0, 50)}"`);
        continue;
      }
      checked++;
      if (command === "help") continue;
      const options = (await COMMANDS[command]!.load()).options ?? {};
      for (const [, flag] of rest.slice(command.length).matchAll(/--([a-z][a-z0-9-]*)/g)) {
        if (!(flag! in options) && flag !== "help") problems.push(`${file}: prolearn ${command} has no --${flag}`);
      }
    }
  }
  assert.ok(checked >= 30, `checked ${checked} command lines`);
  assert.deepEqual(problems, []);
});
