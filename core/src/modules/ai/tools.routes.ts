import { z } from "zod";
import type { Api } from "../../platform/http/api.js";
import { dataOf } from "../../platform/http/api.js";
import type { ToolRegistry } from "../../platform/tools/registry.js";

const toolSchema = z
  .object({
    name: z.string(),
    description: z.string(),
    permission: z.string(),
    effect: z.enum(["read", "write", "external"]),
    inputSchema: z.record(z.string(), z.unknown()),
  })
  .meta({ id: "AiTool" });

/** Registers the listing of the AI tools a caller may use. */
export function registerToolRoutes(api: Api, tools: ToolRegistry): void {
  api.route({
    method: "get",
    path: "/api/ai/tools",
    operationId: "listAiTools",
    summary: "The AI tools the caller may use, with their permissions and input schemas",
    tags: ["ai"],
    response: dataOf(z.array(toolSchema)),
    handler: async (_ctx, _in, { caller }) => ({ data: tools.available(caller) }),
  });
}
