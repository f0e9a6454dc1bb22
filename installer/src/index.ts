import { program } from "./cli.js";

await program().parseAsync(process.argv);
