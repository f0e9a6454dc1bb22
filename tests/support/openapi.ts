import type { TestServer } from "./server.js";

/** One operation of the OpenAPI document. */
export interface Operation {
  method: string;
  path: string;
  operationId: string;
  auth: "public" | "user";
  permission?: string;
  /** "installation" for routes over data no organization owns. */
  scope: "organization" | "installation";
  /** A JSON request body (multipart uploads are tested on their own). */
  hasBody: boolean;
  pathParams: string[];
}

/** Every operation the server documents. */
export async function operations(srv: TestServer): Promise<Operation[]> {
  const doc = (await (await srv.fetch("/api/openapi.json")).json()) as {
    paths: Record<
      string,
      Record<
        string,
        {
          operationId: string;
          "x-auth"?: string;
          "x-permission"?: string;
          "x-scope"?: string;
          requestBody?: { content: Record<string, unknown> };
        }
      >
    >;
  };
  const ops: Operation[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      ops.push({
        method: method.toUpperCase(),
        path,
        operationId: op.operationId,
        auth: op["x-auth"] === "user" ? "user" : "public",
        permission: op["x-permission"],
        scope: op["x-scope"] === "installation" ? "installation" : "organization",
        hasBody: op.requestBody?.content["application/json"] !== undefined,
        pathParams: [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1] as string),
      });
    }
  }
  return ops;
}

/** A path with its parameters filled in. */
export const fill = (path: string, values: Record<string, string>) =>
  path.replace(/\{(\w+)\}/g, (_, k: string) => values[k] ?? "00000000-0000-4000-8000-000000000000");
