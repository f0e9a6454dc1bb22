import { ApiError } from "$lib/api/client";

/** One server-sent event. */
export interface StreamEvent {
  event: string;
  data: unknown;
}

/**
 * Reads a streamed response (openapi-fetch with parseAs "stream": EventSource cannot POST) event by event.
 * A failed response throws its API error.
 */
export async function readEventStream(
  result: { data?: unknown; error?: unknown; response: Response },
  onEvent: (e: StreamEvent) => void,
): Promise<void> {
  const { data, error, response } = result;
  if (!response.ok || !data) {
    const err = (error ?? {}) as { error?: { code?: string; message?: string } };
    throw new ApiError(
      response.status,
      err.error?.code ?? `http_${response.status}`,
      err.error?.message ?? response.statusText,
    );
  }
  const reader = (data as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const line = /^data: (.*)$/m.exec(block)?.[1];
      if (line === undefined) continue; // a keep-alive comment
      onEvent({ event: /^event: (.*)$/m.exec(block)?.[1] ?? "message", data: JSON.parse(line) as unknown });
    }
  }
}
