import { z } from "zod";
import type { ToolRegistry } from "../../platform/tools/registry.js";
import { addMemory } from "./assistant.service.js";

/** The assistant's own tool: remember a fact for the user (asks first, like every write). */
export function registerAssistantTools(tools: ToolRegistry): void {
  tools.register({
    name: "assistant.remember",
    description: "Remember a fact about the user for later conversations (asks the user to approve first).",
    permission: "assistant.use",
    effect: "write",
    input: z.strictObject({ fact: z.string().trim().min(1).max(500) }),
    run: async (ctx, input) => {
      const m = await addMemory(ctx, input.fact);
      return { id: m.id, fact: m.text };
    },
  });
}
