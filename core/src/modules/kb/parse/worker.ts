// The parser process: reads documents one at a time and sends back their text blocks. It runs apart from
// the server with a heap limit and is killed after a wall-clock limit, so a hostile file can only take
// down this process (which the server then replaces).
import { readFile } from "node:fs/promises";
import { extract, ExtractError, type ExtractLimits, type Kind } from "./extract.js";

/** The request the server sends. */
export interface ParseRequest {
  id: number;
  file: string;
  kind: Kind;
  limits: ExtractLimits;
}

process.on("message", (msg: ParseRequest) => {
  void (async () => {
    try {
      const out = await extract(msg.kind, await readFile(msg.file), msg.limits);
      process.send?.({ id: msg.id, ok: true, result: out });
    } catch (err) {
      const known = err instanceof ExtractError;
      process.send?.({
        id: msg.id,
        ok: false,
        code: known ? err.code : "corrupt",
        message: known ? err.message : "The document could not be read.",
      });
    }
  })();
});
// The server closing the channel means it is done with us.
process.on("disconnect", () => process.exit(0));
