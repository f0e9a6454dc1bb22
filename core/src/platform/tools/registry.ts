import type { Knex } from "knex";
import { z } from "zod";
import { can, type Caller } from "../auth/caller.js";
import type { PermissionCatalog } from "../auth/permissions.js";
import { withOrg } from "../db/tenant.js";
import { AppError } from "../http/errors.js";
import { EgressError } from "../gateway/gateway.js";
import type { Logger } from "../log.js";

/** What a tool does: reads, changes data, or reaches an outside system. */
export type ToolEffect = "read" | "write" | "external";

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
  /**
   * "write" tools change data, "external" ones reach a system outside WorkSynapse; both run only once a
   * person (or the organization's policy) has approved the call.
   */
  effect: ToolEffect;
  /** The tool returns passages (Passage[]) that an answer may cite. */
  citable?: boolean;
  input: I;
  run(ctx: ToolContext, input: z.infer<I>): Promise<O>;
}

/** A passage a citable tool returns: what an answer cites as [ref]. */
export interface Passage {
  ref: number;
  text: string;
  document: string;
  documentId: string;
  collection: string;
  chunkIndex: number;
  page: number | null;
  heading: string;
}

/** A tool as offered to a caller (and to the model): name, description and input JSON Schema. */
export interface ToolInfo {
  name: string;
  description: string;
  permission: string;
  effect: ToolEffect;
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
  /**
   * Runs in the tool's transaction before the tool (the assistant consumes the approval there, so an
   * approval is used at most once and only if the call commits).
   */
  before?: (trx: Knex.Transaction) => Promise<void>;
}

/** The tools the AI may use. Modules register theirs at start-up; nothing else reaches data on the AI's behalf. */
export class ToolRegistry {
  private readonly tools = new Map<string, ToolDef>();

  constructor(
    private readonly permissions: PermissionCatalog,
    private readonly log: Pick<Logger, "error">,
    /** Records a side-effecting call in the audit log (in the call's transaction). */
    private readonly audit?: (
      trx: Knex.Transaction,
      caller: Caller,
      details: Record<string, unknown>,
    ) => Promise<void>,
  ) {}

  /** Adds a tool; its name must be unique and its permission declared. */
  register<I extends z.ZodType, O>(def: ToolDef<I, O>): void {
    if (!/^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$/.test(def.name)) throw new Error(`bad tool name ${def.name}`);
    if (this.tools.has(def.name)) throw new Error(`tool ${def.name} registered twice`);
    if (!this.permissions.has(def.permission)) throw new Error(`tool ${def.name}: unknown permission`);
    this.tools.set(def.name, def as unknown as ToolDef);
  }

  /** A registered tool by name. */
  get(name: string): ToolDef | undefined {
    return this.tools.get(name);
  }

  /** Every tool, sorted by name. */
  all(): ToolDef[] {
    return [...this.tools.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The tools this caller may use, sorted by name. */
  available(caller: Caller): ToolInfo[] {
    return this.all()
      .filter((t) => can(caller, t.permission))
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
    if (tool.effect !== "read" && !opts.approved)
      return logAlone({ status: "approval_required", tool: name, input: parsed.data });
    try {
      return await withOrg(knex, caller.orgId, async (trx) => {
        await opts.before?.(trx);
        const output = await tool.run({ caller, trx }, parsed.data);
        const result: ToolResult = { status: "ok", output };
        await log(trx, result);
        // What the AI changed or sent goes to the audit log too, in the same transaction as the change.
        if (tool.effect !== "read")
          await this.audit?.(trx, caller, {
            tool: name,
            effect: tool.effect,
            runId: opts.runId ?? null,
            input: parsed.data,
          });
        return result;
      });
    } catch (err) {
      // The tool's transaction rolled back; the failure is logged on its own. Unexpected errors are not shown raw.
      const expected = (err instanceof AppError && err.status < 500) || err instanceof EgressError;
      if (!expected) this.log.error({ err, tool: name, orgId: caller.orgId }, "tool failed");
      return logAlone({ status: "error", error: expected ? err.message : "The tool failed." });
    }
  }
}
