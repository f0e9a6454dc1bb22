import { z } from "zod";

/** Body of /livez. */
export const livenessSchema = z.object({ status: z.literal("ok") }).meta({ id: "Liveness" });

/** Body of /readyz: overall status and each dependency's check. */
export const readinessSchema = z
  .object({
    status: z.enum(["ready", "not_ready", "draining"]),
    checks: z.record(z.string(), z.object({ ok: z.boolean(), error: z.string().optional() })),
  })
  .meta({ id: "Readiness" });

/** What the UI needs to know about this installation before sign-in. */
export const systemInfoSchema = z
  .object({
    name: z.literal("WorkSynapse"),
    version: z.string(),
    roles: z.array(z.enum(["web", "worker", "inference"])),
    database: z.enum(["postgres", "pglite"]),
  })
  .meta({ id: "SystemInfo" });
