import type { Knex } from "knex";
import { z } from "zod";
import { can, type Caller } from "../auth/caller.js";
import type { PermissionCatalog } from "../auth/permissions.js";
import { withOrg } from "../db/tenant.js";
import { AppError } from "../http/errors.js";
import type { Logger } from "../log.js";

/** What a tool runs with: the asking user and a transaction scoped to their organization. */
export interface ToolContext {
  caller: Caller;
  trx: Knex.Transaction;
}

/** One AI tool: what it does, the permission it needs, whether it changes anything, and its handler. */
export interface ToolDef<I extends z.ZodType = z.ZodType, O = unknown> {
  /** `<module>.<verb>`, e.g. notes.search. */
  name: string;
  description: string;
  permission: string;
  /** "write" tools change data and run only once a person has approved the call. */
  effect: "read" | "write";
  input: I;
  run(ctx: ToolContext, input: z.infer<I>): Promise<O>;
}

/** A tool as offered to a caller (and to the model): name, description and input JSON Schema. */
export interface ToolInfo {
  name: string;
  description: string;
  permission: string;
  effect: "read" | "write";
  inputSchema: Record<string, unknown>;
}

/** The outcome of one call; every outcome is logged in ai_tool_calls. */
export type ToolResult =
  | { status: "ok"; output: unknown }
  | { status: "approval_required"; tool: string; input: unknown }
  | { status: "denied" | "error"; error: string };

/** Options of one invocation. */
export interface InvokeOptions {
  /** A person approved this exact call (needed for write tools). */
  approved?: boolean;
  /** The assistant run the call belongs to, if any. */
  runId?: string;
}

/** The tools the AI may use. Modules register theirs at start-up; nothing else reaches data on the AI's behalf. */
export class ToolRegistry {
  private readonly tools = new Map<string, ToolDef>();

  constructor(
    private readonly permissions: PermissionCatalog,
    private readonly log: Pick<Logger, "error">,
  ) {}

  /** Adds a tool; its name must be unique and its permission declared. */
  register<I extends z.ZodType, O>(def: ToolDef<I, O>): void {
    if (!/^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$/.test(def.name)) throw new Error(`bad tool name ${def.name}`);
    if (this.tools.has(def.name)) throw new Error(`tool ${def.name} registered twice`);
    if (!this.permissions.has(def.permission)) throw new Error(`tool ${def.name}: unknown permission`);
    this.tools.set(def.name, def as unknown as ToolDef);
  }

  /** The tools this caller may use, sorted by name. */
  available(caller: Caller): ToolInfo[] {
    return [...this.tools.values()]
      .filter((t) => can(caller, t.permission))
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((t) => ({
        name: t.name,
        description: t.description,
        permission: t.permission,
        effect: t.effect,
        inputSchema: z.toJSONSchema(t.input, { io: "input" }) as Record<string, unknown>,
      }));
  }

  /**
   * Runs a tool as the caller, in its own transaction scoped to the caller's organization, and logs the
   * call. Never throws for the tool's own failures: the agent loop gets them as results.
   */
  async invoke(
    knex: Knex,
    caller: Caller,
    name: string,
    rawInput: unknown,
    opts: InvokeOptions = {},
  ): Promise<ToolResult> {
    const started = Date.now();
    const tool = this.tools.get(name);
    const log = (trx: Knex | Knex.Transaction, result: ToolResult) =>
      trx("ai_tool_calls").insert({
        org_id: caller.orgId,
        user_id: caller.userId,
        run_id: opts.runId ?? null,
        tool: name.slice(0, 200),
        input: JSON.stringify(rawInput ?? null),
        output: result.status === "ok" ? JSON.stringify(result.output ?? null) : null,
        status: result.status,
        error: "error" in result ? result.error : null,
        duration_ms: Date.now() - started,
      });
    const logAlone = (result: ToolResult) =>
      withOrg(knex, caller.orgId, (trx) => log(trx, result)).then(() => result);

    if (!tool) return logAlone({ status: "error", error: `There is no tool named ${name}.` });
    if (!can(caller, tool.permission))
      return logAlone({ status: "denied", error: `This needs the ${tool.permission} permission.` });
    const parsed = tool.input.safeParse(rawInput);
    if (!parsed.success) return logAlone({ status: "error", error: z.prettifyError(parsed.error) });
    if (tool.effect === "write" && !opts.approved)
      return logAlone({ status: "approval_required", tool: name, input: parsed.data });
    try {
      return await withOrg(knex, caller.orgId, async (trx) => {
        const output = await tool.run({ caller, trx }, parsed.data);
        const result: ToolResult = { status: "ok", output };
        await log(trx, result);
        return result;
      });
    } catch (err) {
      // The tool's transaction rolled back; the failure is logged on its own. Unexpected errors are not shown raw.
      const expected = err instanceof AppError && err.status < 500;
      if (!expected) this.log.error({ err, tool: name, orgId: caller.orgId }, "tool failed");
      return logAlone({ status: "error", error: expected ? err.message : "The tool failed." });
    }
  }
}
