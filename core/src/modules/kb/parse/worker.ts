// The parser process: reads one document and sends back its text blocks. It runs apart from the server
// with a heap limit and is killed after a wall-clock limit, so a hostile file can only kill this process.
import { readFile } from "node:fs/promises";
import { extract, ExtractError, type ExtractLimits, type Kind } from "./extract.js";

/** The request the server sends. */
export interface ParseRequest {
  file: string;
  kind: Kind;
  limits: ExtractLimits;
}

process.once("message", (msg: ParseRequest) => {
  void (async () => {
    try {
      const out = await extract(msg.kind, await readFile(msg.file), msg.limits);
      process.send?.({ ok: true, result: out }, () => process.exit(0));
    } catch (err) {
      const known = err instanceof ExtractError;
      process.send?.(
        {
          ok: false,
          code: known ? err.code : "corrupt",
          message: known ? err.message : "The document could not be read.",
          detail: err instanceof Error ? err.message.slice(0, 300) : String(err),
        },
        () => process.exit(0),
      );
    }
  })();
});
