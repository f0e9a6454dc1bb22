import Router from "@koa/router";
import type { Context } from "koa";
import { z } from "zod";
import {
  createDocument,
  type ZodOpenApiPathsObject,
  type ZodOpenApiOperationObject,
  type ZodOpenApiResponsesObject,
  type oas31,
} from "zod-openapi";
import type { Knex } from "knex";
import type { Caller } from "../auth/caller.js";
import { requirePermission } from "../auth/caller.js";
import { AppError, errorBodySchema } from "./errors.js";
import { parseOr400, validBody } from "./validate.js";

type Method = "get" | "post" | "put" | "patch" | "delete";

/** The validated input of a route. */
export interface RouteInput<B, Q, P> {
  body: B;
  query: Q;
  params: P;
}

/** What an authenticated handler works with: the caller and a transaction scoped to the caller's organization. */
export interface Scope {
  caller: Caller;
  trx: Knex.Transaction;
}

/** Who is calling, found before the organization's transaction opens (see identity/auth.ts). */
export interface RequestIdentity {
  orgId: string;
  rateKey: string;
  /** Enters the organization in `trx` (sets it for row-level security) and loads the caller. */
  load(trx: Knex.Transaction): Promise<Caller>;
}

/** What authenticated routes need from the platform. */
export interface ApiAuth {
  knex: Knex;
  identify(ctx: Context): Promise<RequestIdentity | null>;
  /** Consumes one request of the caller's rate limit; throws 429 past it. */
  limit(key: string): Promise<void>;
}

/** One API route: its contract (zod schemas, feeding OpenAPI) and its handler. */
interface RouteContract<B extends z.ZodType, Q extends z.ZodType, P extends z.ZodType> {
  method: Method;
  /** Koa path, e.g. /api/things/:id */
  path: string;
  operationId: string;
  summary: string;
  tags: string[];
  body?: B;
  query?: Q;
  params?: P;
  /** Success status and the schema of its body (omit for 204). */
  status?: number;
  response?: z.ZodType;
  /** Content type of a non-JSON success body (e.g. text/plain). */
  responseType?: string;
  /** A multipart/form-data body the handler reads itself (uploads); documented, not validated here. */
  multipart?: z.ZodType;
  /** Error statuses this route documents besides 400 and 500. */
  errors?: number[];
}

/** A route anyone may call (health, sign-in). */
export interface PublicRouteDef<
  B extends z.ZodType,
  Q extends z.ZodType,
  P extends z.ZodType,
> extends RouteContract<B, Q, P> {
  handler: (ctx: Context, input: RouteInput<z.infer<B>, z.infer<Q>, z.infer<P>>) => Promise<unknown>;
}

/** Who is calling, as known before the caller is loaded (not yet checked: see RouteDef.early). */
export interface EarlyIdentity {
  orgId: string;
  rateKey: string;
}

/** A route for signed-in callers: authenticate, check the permission, validate, run in the org's transaction. */
export interface RouteDef<
  B extends z.ZodType,
  Q extends z.ZodType,
  P extends z.ZodType,
  E = undefined,
> extends RouteContract<B, Q, P> {
  /** The permission the caller needs; omit for routes any signed-in caller may use (their own profile). */
  permission?: string;
  /**
   * "installation" for routes over data no organization owns (the list of organizations, model packs,
   * backups): after the input is validated, callers who are not system administrators get 403 before the
   * handler runs; default "organization".
   */
  scope?: "organization" | "installation";
  /**
   * Work started as soon as the credential is identified and the input valid, before the caller is loaded and
   * the permission checked (latency hiding: e.g. a search's index query on the caller's last plan). Its result
   * reaches the handler as `scope.early`; it must give out nothing by itself, since the caller is not checked
   * yet, and the handler must check whatever it uses of it. A result with an `abandon` method (work still
   * running, e.g. a speculative generation) has it called when the request fails before or in the handler.
   */
  early?: (input: RouteInput<z.infer<B>, z.infer<Q>, z.infer<P>>, who: EarlyIdentity) => E;
  handler: (
    ctx: Context,
    input: RouteInput<z.infer<B>, z.infer<Q>, z.infer<P>>,
    scope: Scope & { early: E },
  ) => Promise<unknown>;
}

const ERROR_TEXT: Record<number, string> = {
  400: "Invalid request",
  401: "Not signed in",
  403: "Missing permission",
  404: "Not found",
  409: "Conflict",
  413: "Body too large",
  415: "Unsupported media type",
  429: "Rate limit or quota exceeded",
  500: "Internal error",
  503: "Not ready or overloaded",
};

/** Stops what an early hook left running (see RouteDef.early). */
const abandon = (value: unknown) => {
  const v = value as { abandon?: unknown } | null | undefined;
  if (typeof v?.abandon === "function") (v.abandon as () => void)();
};

const NO_INPUT = Object.freeze({ body: undefined, query: undefined, params: undefined });

/** Work a handler asks to run after its transaction commits (long work must not hold a connection or locks). */
export class AfterCommit<T = unknown> {
  constructor(readonly run: () => Promise<T>) {}
}

/** Defers `run` until the route's transaction has committed; its result becomes the response body. */
export const afterCommit = <T>(run: () => Promise<T>) => new AfterCommit(run);

/** A router whose routes also make up the OpenAPI document. */
export class Api {
  /** One small router per path bucket (see bucketOf): a request is matched only against its neighbours. */
  private readonly routers = new Map<
    string,
    { router: Router; routes: ReturnType<Router["routes"]> | undefined }
  >();

  /**
   * @param bodyLimit largest JSON body a route accepts (e.g. "1mb").
   * @param auth authentication for signed-in routes; without it they answer 503 (app built for docs only).
   */
  constructor(
    private readonly bodyLimit = "1mb",
    private auth?: ApiAuth,
  ) {}

  /** Attaches authentication after construction (the identity module needs the API to exist first). */
  setAuth(auth: ApiAuth): void {
    this.auth = auth;
  }

  private readonly paths: ZodOpenApiPathsObject = {};

  /** Adds a public route: validate input with zod, run the handler, present its result. */
  publicRoute<
    B extends z.ZodType = z.ZodUnknown,
    Q extends z.ZodType = z.ZodUnknown,
    P extends z.ZodType = z.ZodUnknown,
  >(def: PublicRouteDef<B, Q, P>): void {
    const status = def.status ?? 200;
    this.register(def, undefined, async (ctx) => {
      const input = await this.input(ctx, def);
      // 200 comes with the body; any other status is set first so a handler can still choose (e.g. /readyz 503).
      if (status !== 200) ctx.status = status;
      return def.handler(ctx, input);
    });
  }

  /** Adds a signed-in route: authenticate, rate-limit, open the org transaction, load the caller, check, validate, run. */
  route<
    B extends z.ZodType = z.ZodUnknown,
    Q extends z.ZodType = z.ZodUnknown,
    P extends z.ZodType = z.ZodUnknown,
    E = undefined,
  >(def: RouteDef<B, Q, P, E>): void {
    const status = def.status ?? 200;
    this.register(
      def,
      def.permission ?? "",
      async (ctx) => {
        const auth = this.auth;
        if (!auth) throw AppError.unavailable("Authentication is not configured on this process.");
        const identity = await auth.identify(ctx);
        if (!identity) throw AppError.unauthenticated();
        await auth.limit(identity.rateKey);
        // The input is read and validated while the transaction opens; its errors are thrown after the caller
        // is loaded and the permission checked, so a caller without it still gets 403 before any 400.
        const input = this.input(ctx, def);
        input.catch(() => undefined);
        const early = def.early
          ? input.then((i) => def.early?.(i, { orgId: identity.orgId, rateKey: identity.rateKey }))
          : undefined;
        early?.catch(() => undefined);
        // load() enters the organization: one statement sets it and loads the caller.
        const result = await auth.knex
          .transaction(async (trx) => {
            const caller = await identity.load(trx);
            ctx.state.caller = caller;
            if (def.permission) requirePermission(caller, def.permission);
            const valid = await input;
            if (def.scope === "installation" && !caller.systemAdmin)
              throw AppError.forbidden("Only system administrators may do this.");
            if (status !== 200) ctx.status = status;
            return def.handler(ctx, valid, { caller, trx, early: (await early) as E });
          })
          .catch((err: unknown) => {
            void early?.then(abandon, () => undefined);
            throw err;
          });
        return result instanceof AfterCommit ? result.run() : result;
      },
      def.scope,
    );
  }

  private async input<B extends z.ZodType, Q extends z.ZodType, P extends z.ZodType>(
    ctx: Context,
    def: RouteContract<B, Q, P>,
  ): Promise<RouteInput<z.infer<B>, z.infer<Q>, z.infer<P>>> {
    if (!def.body && !def.query && !def.params)
      return NO_INPUT as RouteInput<z.infer<B>, z.infer<Q>, z.infer<P>>;
    const body = def.body ? await validBody(ctx, def.body, this.bodyLimit) : undefined;
    // A PATCH that names no field changes nothing: it is refused, as a client error, rather than run.
    if (def.method === "patch" && typeof body === "object" && body !== null && Object.keys(body).length === 0)
      throw new AppError(400, "empty_patch", "Send at least one field to change.");
    return {
      body: body as z.infer<B>,
      query: (def.query ? parseOr400(def.query, ctx.query) : undefined) as z.infer<Q>,
      params: (def.params ? parseOr400(def.params, ctx.params) : undefined) as z.infer<P>,
    };
  }

  private register<B extends z.ZodType, Q extends z.ZodType, P extends z.ZodType>(
    def: RouteContract<B, Q, P>,
    permission: string | undefined,
    run: (ctx: Context) => Promise<unknown>,
    scope: "organization" | "installation" = "organization",
  ): void {
    const status = def.status ?? 200;
    this.routerFor(def.path)[def.method](def.operationId, def.path, async (ctx: Context) => {
      const result = await run(ctx);
      if (status === 204) {
        ctx.status = 204;
        return;
      }
      // A handler may have chosen a more precise type (e.g. CSV or JSON lines).
      if (def.responseType && !ctx.response.get("Content-Type")) ctx.type = def.responseType;
      ctx.body = result;
    });

    const oaPath = def.path.replace(/:(\w+)/g, "{$1}");
    const responses: ZodOpenApiResponsesObject = {
      [`${status}`]: def.response
        ? {
            description: def.summary,
            content: { [def.responseType ?? "application/json"]: { schema: def.response } },
          }
        : { description: def.summary },
    };
    for (const code of [400, ...(def.errors ?? []), 500]) {
      responses[`${code}` as `4${string}`] = {
        description: ERROR_TEXT[code] ?? "Error",
        content: { "application/json": { schema: errorBodySchema } },
      };
    }
    if (permission !== undefined) {
      for (const code of [401, 403, 404, 429]) {
        responses[`${code}` as `4${string}`] = {
          description: ERROR_TEXT[code] ?? "Error",
          content: { "application/json": { schema: errorBodySchema } },
        };
      }
    }
    const op: ZodOpenApiOperationObject & { "x-permission"?: string; "x-auth"?: string; "x-scope"?: string } =
      {
        operationId: def.operationId,
        "x-auth": permission === undefined ? "public" : "user",
        ...(scope === "installation" ? { "x-scope": "installation" } : {}),
        ...(permission ? { "x-permission": permission } : {}),
        ...(permission !== undefined ? { security: [{ session: [] }, { apiKey: [] }, { bearer: [] }] } : {}),
        summary: def.summary,
        tags: def.tags,
        responses,
        ...(def.query || def.params
          ? {
              requestParams: {
                ...(def.query ? { query: def.query as unknown as z.ZodObject } : {}),
                ...(def.params ? { path: def.params as unknown as z.ZodObject } : {}),
              },
            }
          : {}),
        ...(def.body
          ? { requestBody: { required: true, content: { "application/json": { schema: def.body } } } }
          : {}),
        ...(def.multipart
          ? { requestBody: { required: true, content: { "multipart/form-data": { schema: def.multipart } } } }
          : {}),
      };
    this.paths[oaPath] = { ...this.paths[oaPath], [def.method]: op };
  }

  /** A plain GET route outside the OpenAPI document (the document itself, the docs page, tests). */
  get(path: string, handler: (ctx: Context) => unknown): void {
    this.routerFor(path).get(path, async (ctx) => {
      await handler(ctx);
    });
  }

  /** The Koa middleware that dispatches to the request's bucket. */
  middleware() {
    return (ctx: Context, next: () => Promise<unknown>) => {
      const bucket = this.routers.get(bucketOf(ctx.path));
      if (!bucket) return next();
      bucket.routes ??= bucket.router.routes();
      return bucket.routes(ctx as never, next);
    };
  }

  private routerFor(path: string): Router {
    const key = bucketOf(path);
    if (key.includes(":") || key.includes("*"))
      throw new Error(`${path}: the first two path segments must be static`);
    let bucket = this.routers.get(key);
    if (!bucket) {
      bucket = { router: new Router(), routes: undefined };
      this.routers.set(key, bucket);
    }
    return bucket.router;
  }

  /** Methods served on a path, for 405 answers (HEAD comes with GET). */
  allowedMethods(path: string): string[] {
    const methods = new Set<string>();
    const bucket = this.routers.get(bucketOf(path));
    for (const layer of bucket?.router.match(path, "GET").path ?? [])
      for (const m of layer.methods) methods.add(m);
    return [...methods];
  }

  /** The OpenAPI 3.1 document of every route added so far. */
  document(info: { title: string; version: string }): oas31.OpenAPIObject {
    return createDocument({
      openapi: "3.1.0",
      info: {
        ...info,
        description: "WorkSynapse API. Every error body is { error: { code, message, details } }.",
      },
      paths: this.paths,
    });
  }
}

/**
 * The bucket of a path: its first two segments (`/api/users/1` -> `/api/users`, `/livez` -> `/livez`).
 * @koa/router tests every route of a router in turn, so one router for all routes costs every request
 * microseconds per route; buckets keep that to a handful (bench:http measures it).
 */
export function bucketOf(path: string): string {
  const first = path.indexOf("/", 1);
  if (first < 0) return path;
  const second = path.indexOf("/", first + 1);
  const end = second < 0 ? path.length : second;
  // "/api/" and "/api" are one bucket
  return end === first + 1 ? path.slice(0, first) : path.slice(0, end);
}

/** Wraps a data schema as the `{ data }` envelope of API responses. */
export const dataOf = <T extends z.ZodType>(schema: T) => z.object({ data: schema });
