import { program } from "./cli.js";

try {
  await program().parseAsync(process.argv);
} catch (err) {
  // One readable line per problem, no stack: this is an admin's terminal.
  const e = err as { message?: string; details?: { fields?: { path: string; message: string }[] } };
  process.stderr.write(`error: ${e.message ?? String(err)}\n`);
  for (const f of e.details?.fields ?? [])
    process.stderr.write(`  - ${f.path ? `${f.path}: ` : ""}${f.message}\n`);
  process.exitCode = 1;
}
