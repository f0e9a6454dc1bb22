import type { Engine } from "../../core/src/modules/assistant/agent.js";
import type { ChatHandle, GenerateResult, PromptOptions } from "../../core/src/modules/ai/runtime.js";

/** What a script sees at each step: the step number in this chat, the prompt and the offered schema. */
export interface ScriptStep {
  step: number;
  prompt: string;
  system: string;
  schema: Record<string, unknown>;
  signal?: AbortSignal;
}

/** What a script returns: a decision object (sent as JSON), raw text, or extra behaviour. */
export type ScriptReply =
  | Record<string, unknown>
  | string
  | { raw?: string; decision?: Record<string, unknown>; delayMs?: number; promptTokens?: number };

/**
 * A deterministic engine behind the assistant's Engine interface: it ignores the grammar and says what the
 * test scripts, so the loop's own checks are what stand between a decision and its execution.
 */
export class ScriptedEngine implements Engine {
  script: (s: ScriptStep) => ScriptReply = () => ({ action: "answer", answer: "Scripted answer." });
  /** Every prompt the loop sent, in order. */
  readonly prompts: ScriptStep[] = [];

  /** When set, the next open fails with it (no free sequence, a model that will not load). */
  failOpen: Error | null = null;

  async open(req: { system?: string }): Promise<ChatHandle> {
    const fail = this.failOpen;
    this.failOpen = null;
    if (fail) throw fail;
    let step = 0;
    return {
      prompt: async (text: string, opts: PromptOptions = {}): Promise<GenerateResult> => {
        step += 1;
        const s: ScriptStep = {
          step,
          prompt: text,
          system: req.system ?? "",
          schema: (opts.jsonSchema ?? {}) as Record<string, unknown>,
          signal: opts.signal,
        };
        this.prompts.push(s);
        const reply = this.script(s);
        const extra =
          typeof reply === "object" && ("raw" in reply || "decision" in reply || "delayMs" in reply)
            ? (reply as {
                raw?: string;
                decision?: Record<string, unknown>;
                delayMs?: number;
                promptTokens?: number;
              })
            : undefined;
        const out =
          typeof reply === "string"
            ? reply
            : extra
              ? (extra.raw ?? JSON.stringify(extra.decision ?? {}))
              : JSON.stringify(reply);
        if (extra?.delayMs) {
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, extra.delayMs);
            opts.signal?.addEventListener("abort", () => {
              clearTimeout(t);
              resolve();
            });
          });
        }
        if (opts.signal?.aborted)
          return { text: "", promptTokens: 1, completionTokens: 0, finishReason: "cancelled" };
        for (let i = 0; i < out.length; i += 7) opts.onToken?.(out.slice(i, i + 7));
        let json: unknown;
        try {
          json = opts.jsonSchema ? (JSON.parse(out) as unknown) : undefined;
        } catch {
          json = undefined;
        }
        return {
          text: out,
          json,
          promptTokens: extra?.promptTokens ?? Math.ceil(text.length / 4),
          completionTokens: Math.ceil(out.length / 4),
          finishReason: "stop",
        };
      },
      close: async () => undefined,
    };
  }

  async countTokens(_model: unknown, text: string): Promise<number> {
    return Math.ceil(text.length / 4);
  }

  contextSize(): number {
    return 2048;
  }
}
