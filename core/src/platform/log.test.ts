import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "./log.js";

describe("logging", () => {
  it("writes JSON lines with the module and redacts credentials wherever they appear", () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const log = createLogger({ destination });
    log.child({ module: "identity", reqId: "r1" }).info(
      {
        req: {
          headers: { authorization: "Bearer abc.def", cookie: "__Host-ws=s3cret", "x-api-key": "wsk_123" },
        },
        res: { headers: { "set-cookie": "__Host-ws=s3cret" } },
        user: { password: "hunter2hunter2", token: "tok_1" },
        password: "pw",
        apiKey: "key",
      },
      "signed in",
    );
    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0] as string) as Record<string, unknown>;
    expect(entry).toMatchObject({ module: "identity", reqId: "r1", msg: "signed in", level: 30 });
    const text = lines[0] as string;
    for (const secret of ["abc.def", "s3cret", "wsk_123", "hunter2", "tok_1", '"pw"', '"key"']) {
      expect(text).not.toContain(secret);
    }
    expect(text.match(/\[redacted\]/g)?.length).toBe(8);
  });
});
