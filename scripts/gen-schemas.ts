// Writes schemas/*.json from the TypeScript sources (the one source of truth); with --check,
// fails when a checked-in schema differs from what the code produces (drift), as CI runs it.
import { readFileSync, writeFileSync, existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { generatedSchemas } from "../src/schemas.js";

const check = process.argv.includes("--check");
const root = path.resolve(import.meta.dirname, "..");
const outDir = path.join(root, "schemas");
mkdirSync(outDir, { recursive: true });
const drifted: string[] = [];
for (const [name, schema] of Object.entries(await generatedSchemas())) {
  const file = path.join(outDir, name);
  const text = JSON.stringify(schema, null, 2) + "\n";
  if (check) {
    if (!existsSync(file) || readFileSync(file, "utf8") !== text) drifted.push(path.relative(root, file));
  } else {
    writeFileSync(file, text);
    console.log(`wrote ${path.relative(root, file)}`);
  }
}
if (drifted.length) {
  console.error(`schemas drifted from the code: ${drifted.join(", ")}\nrun \`npm run schemas\` and commit the result`);
  process.exit(1);
}
if (check) console.log("schemas match the code");
