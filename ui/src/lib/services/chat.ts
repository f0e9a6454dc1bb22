import { api, ApiError } from "$lib/api/client";

/** The final event of a streamed chat. */
export interface ChatDone {
  message: { role: string; content: string };
  finishReason: string;
  usage: { promptTokens: number; completionTokens: number; totalTokens: number };
  timing: { ms: number; firstTokenMs: number | null; tokensPerSecond: number };
}

/**
 * POSTs to /api/ai/chat through the generated client and reads its server-sent events (EventSource
 * cannot POST), calling `onToken` for each chunk; resolves with the final event.
 */
export async function streamChat(
  body: {
    model?: string;
    messages: { role: "system" | "user" | "assistant"; content: string }[];
    maxTokens?: number;
  },
  onToken: (text: string) => void,
  signal?: AbortSignal,
): Promise<ChatDone> {
  const { data, error, response } = await api.POST("/api/ai/chat", { body, parseAs: "stream", signal });
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
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "null") as unknown;
      if (event === "token") onToken((data as { text: string }).text);
      else if (event === "done") return data as ChatDone;
      else if (event === "error") {
        const e = (data as { error: { code: string; message: string } }).error;
        throw new ApiError(500, e.code, e.message);
      }
    }
  }
  throw new ApiError(500, "stream_ended", "The answer stopped before it finished.");
}
