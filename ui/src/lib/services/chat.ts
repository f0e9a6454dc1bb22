import { api, ApiError } from "$lib/api/client";
import { readEventStream } from "./sse";

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
  let done: ChatDone | undefined;
  await readEventStream(
    await api.POST("/api/ai/chat", { body, parseAs: "stream", signal }),
    ({ event, data }) => {
      if (event === "token") onToken((data as { text: string }).text);
      else if (event === "done") done = data as ChatDone;
      else if (event === "error") {
        const e = (data as { error: { code: string; message: string } }).error;
        throw new ApiError(500, e.code, e.message);
      }
    },
  );
  if (!done) throw new ApiError(500, "stream_ended", "The answer stopped before it finished.");
  return done;
}
