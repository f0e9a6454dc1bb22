import createClient from "openapi-fetch";
import type { paths } from "./schema";

/** The typed API client; types come from core's OpenAPI document (npm run codegen). */
export const api = createClient<paths>({ baseUrl: "" });
// Every request says it comes from the UI: the server refuses cookie-authenticated writes without it (CSRF).
api.use({
  onRequest({ request }) {
    request.headers.set("x-requested-with", "worksynapse");
    return request;
  },
});

/** An error answered by the API: its stable code, HTTP status and message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

interface ApiErrorBody {
  error?: { code?: string; message?: string; details?: unknown };
}

/** Unwraps an openapi-fetch result: the data (undefined for 204), or an ApiError thrown. */
export async function unwrap<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await call;
  if (response.ok) return data as T;
  const body = (error ?? {}) as ApiErrorBody;
  throw new ApiError(
    response.status,
    body.error?.code ?? "http_" + response.status,
    body.error?.message ?? response.statusText,
    body.error?.details,
  );
}
