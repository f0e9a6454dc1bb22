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
import { errorBodySchema } from "./errors.js";
import { parseOr400, validBody } from "./validate.js";

type Method = "get" | "post" | "put" | "patch" | "delete";

/** The validated input of a route. */
export interface RouteInput<B, Q, P> {
  body: B;
  query: Q;
  params: P;
}

/** One API route: its contract (zod schemas, feeding OpenAPI) and its handler. */
export interface RouteDef<B extends z.ZodType, Q extends z.ZodType, P extends z.ZodType> {
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
  /** Error statuses this route documents besides 400 and 500. */
  errors?: number[];
  handler: (ctx: Context, input: RouteInput<z.infer<B>, z.infer<Q>, z.infer<P>>) => Promise<unknown>;
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

/** A router whose routes also make up the OpenAPI document. */
export class Api {
  readonly router = new Router();

  /** @param bodyLimit largest JSON body a route accepts (e.g. "1mb"). */
  constructor(private readonly bodyLimit = "1mb") {}

  private readonly paths: ZodOpenApiPathsObject = {};

  /** Adds a route: validate input with zod, run the handler, present `{ data }` (or the raw body for non-JSON). */
  route<
    B extends z.ZodType = z.ZodUnknown,
    Q extends z.ZodType = z.ZodUnknown,
    P extends z.ZodType = z.ZodUnknown,
  >(def: RouteDef<B, Q, P>): void {
    const status = def.status ?? 200;
    const { body, query, params } = def;
    const limit = this.bodyLimit;
    this.router[def.method](def.operationId, def.path, async (ctx: Context) => {
      const input = {
        body: (body ? await validBody(ctx, body, limit) : undefined) as z.infer<B>,
        query: (query ? parseOr400(query, ctx.query) : undefined) as z.infer<Q>,
        params: (params ? parseOr400(params, ctx.params) : undefined) as z.infer<P>,
      };
      // 200 comes with the body; any other status is set first so a handler can still choose (e.g. /readyz 503).
      if (status !== 200) ctx.status = status;
      const result = await def.handler(ctx, input);
      if (status === 204) return;
      if (def.responseType) ctx.type = def.responseType;
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
    const op: ZodOpenApiOperationObject = {
      operationId: def.operationId,
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
    };
    this.paths[oaPath] = { ...this.paths[oaPath], [def.method]: op };
  }

  /** Methods served on a path, for 405 answers (HEAD comes with GET). */
  allowedMethods(path: string): string[] {
    const methods = new Set<string>();
    for (const layer of this.router.match(path, "GET").path) for (const m of layer.methods) methods.add(m);
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

/** Wraps a data schema as the `{ data }` envelope of API responses. */
export const dataOf = <T extends z.ZodType>(schema: T) => z.object({ data: schema });
