import { z } from "zod";
import type { ToolDef } from "../../platform/tools/registry.js";

type Json = Record<string, unknown>;

/** The longest string any argument may be in a decision (the model cannot ramble inside one). */
const ARG_CHARS = 400;
/** Arrays in a decision hold at most this many items. */
const MAX_ITEMS = 3;
/** Integer ranges up to this size become an enum, so the grammar itself keeps the number in range. */
const SMALL_RANGE = 32;

/**
 * A tool's input JSON Schema (zod's) narrowed to what node-llama-cpp's grammar enforces: types, required
 * properties and no others, enums and constants, string and array lengths. Formats the grammar cannot express
 * (uuid) become lengths; the zod schema still validates every argument before anything runs.
 */
export function grammarOf(schema: Json, cap = ARG_CHARS): Json {
  if ("const" in schema) return { const: schema.const };
  if (Array.isArray(schema.enum)) return { enum: schema.enum };
  const alternatives = (schema.anyOf ?? schema.oneOf) as Json[] | undefined;
  if (alternatives) return { oneOf: alternatives.map((s) => grammarOf(s, cap)) };
  if (Array.isArray(schema.type))
    return { oneOf: (schema.type as string[]).map((type) => grammarOf({ ...schema, type }, cap)) };
  switch (schema.type) {
    case "string": {
      if (schema.format === "uuid") return { type: "string", minLength: 36, maxLength: 36 };
      if (schema.format === "date-time" || schema.format === "date" || schema.format === "time")
        return { type: "string", format: schema.format };
      const max = Math.min(Number(schema.maxLength ?? cap), cap);
      const min = Math.min(Number(schema.minLength ?? 0), max);
      return { type: "string", ...(min ? { minLength: min } : {}), maxLength: max };
    }
    case "integer": {
      const lo = schema.minimum as number | undefined;
      const hi = schema.maximum as number | undefined;
      if (lo !== undefined && hi !== undefined && hi - lo < SMALL_RANGE)
        return { enum: Array.from({ length: hi - lo + 1 }, (_, i) => lo + i) };
      return { type: "integer" };
    }
    case "number":
    case "boolean":
    case "null":
      return { type: schema.type };
    case "array":
      return {
        type: "array",
        items: grammarOf((schema.items as Json | undefined) ?? { type: "string" }, cap),
        ...(schema.minItems ? { minItems: schema.minItems } : {}),
        maxItems: Math.max(
          Number(schema.minItems ?? 0),
          Math.min(Number(schema.maxItems ?? MAX_ITEMS), MAX_ITEMS),
        ),
      };
    case "object": {
      const props = (schema.properties ?? {}) as Record<string, Json>;
      return {
        type: "object",
        properties: Object.fromEntries(Object.entries(props).map(([k, v]) => [k, grammarOf(v, cap)])),
        required: (schema.required as string[] | undefined) ?? [],
        additionalProperties: false,
      };
    }
    default:
      return { type: "string", maxLength: cap };
  }
}

/** How many strings a schema can hold at most (arrays count their items), to share a length budget among them. */
function stringSlots(schema: Json): number {
  if ("const" in schema || Array.isArray(schema.enum)) return 0;
  const alternatives = (schema.anyOf ?? schema.oneOf) as Json[] | undefined;
  if (alternatives) return Math.max(0, ...alternatives.map(stringSlots));
  if (schema.type === "string" || (Array.isArray(schema.type) && schema.type.includes("string"))) return 1;
  if (schema.type === "array")
    return (
      Math.min(Number(schema.maxItems ?? MAX_ITEMS), MAX_ITEMS) * stringSlots((schema.items as Json) ?? {})
    );
  if (schema.type === "object")
    return Object.values((schema.properties ?? {}) as Record<string, Json>).reduce(
      (n, p) => n + stringSlots(p),
      0,
    );
  return 0;
}

/** What the model may do at one step. */
export interface Offer {
  tools: ToolDef[];
  /** Whether the model may answer now (false when a tool is required). */
  answer: boolean;
  /** Passage numbers the answer may cite. */
  refs: number[];
  /** Longest answer, in characters. */
  answerChars: number;
  /** Characters all string arguments of one tool call share (so a call finishes within its tokens). */
  argChars: number;
  /** The answer must cite at least one passage (grounded runs that found some). */
  requireCitation?: boolean;
}

/** The JSON schema of one step's decision: one of the offered tools with its arguments, or the answer. */
export function decisionSchema(offer: Offer): Json {
  const options: Json[] = offer.tools.map((t) => {
    const input = z.toJSONSchema(t.input, { io: "input" }) as Json;
    const cap = Math.max(
      8,
      Math.min(ARG_CHARS, Math.floor(offer.argChars / Math.max(1, stringSlots(input)))),
    );
    return {
      type: "object",
      properties: { action: { const: "tool" }, tool: { const: t.name }, arguments: grammarOf(input, cap) },
      required: ["action", "tool", "arguments"],
    };
  });
  if (offer.answer) {
    // The answer comes before its citations so it can stream while it is written.
    options.push({
      type: "object",
      properties: {
        action: { const: "answer" },
        answer: { type: "string", minLength: 1, maxLength: offer.answerChars },
        ...(offer.refs.length
          ? {
              citations: {
                type: "array",
                items: { enum: offer.refs },
                ...(offer.requireCitation ? { minItems: 1 } : {}),
                maxItems: offer.refs.length,
              },
            }
          : {}),
      },
      required: ["action", "answer", ...(offer.refs.length ? ["citations"] : [])],
    });
  }
  return options.length === 1 ? (options[0] as Json) : { oneOf: options };
}

/** A decision as the loop reads it, whatever produced it (the grammar, or an engine that ignores it). */
export const decisionParser = z.discriminatedUnion("action", [
  z.strictObject({ action: z.literal("tool"), tool: z.string().max(200), arguments: z.unknown() }),
  z.strictObject({
    action: z.literal("answer"),
    answer: z.string(),
    citations: z.array(z.number().int()).max(100).optional(),
  }),
]);
export type Decision = z.infer<typeof decisionParser>;

/**
 * Pulls the answer text out of a decision while it is being generated: once the JSON has said
 * `"action": "answer"` and opened `"answer": "`, every decoded character of that string is new answer text.
 */
export class AnswerStream {
  private buf = "";
  private pos = -1; // index in buf of the next undecoded character of the answer string, -1 before it
  private done = false;

  /** Feeds generated text; returns the answer text it completes (may be empty). */
  feed(chunk: string): string {
    this.buf += chunk;
    if (this.done) return "";
    if (this.pos < 0) {
      const m = /^\s*\{\s*"action"\s*:\s*"answer"\s*,\s*"answer"\s*:\s*"/.exec(this.buf);
      if (!m) return "";
      this.pos = m[0].length;
    }
    let out = "";
    while (this.pos < this.buf.length) {
      const c = this.buf[this.pos] as string;
      if (c === '"') {
        this.done = true;
        break;
      }
      if (c !== "\\") {
        out += c;
        this.pos += 1;
        continue;
      }
      const e = this.buf[this.pos + 1];
      if (e === undefined) break; // the escape is not complete yet
      if (e === "u") {
        const hex = this.buf.slice(this.pos + 2, this.pos + 6);
        if (hex.length < 4) break;
        out += String.fromCharCode(parseInt(hex, 16));
        this.pos += 6;
        continue;
      }
      out += ({ n: "\n", t: "\t", r: "\r", b: "\b", f: "\f" } as Record<string, string>)[e] ?? e;
      this.pos += 2;
    }
    return out;
  }
}
