// What the main thread's AiRuntime and the inference thread (inference.worker.ts) say to each other. A slot
// is one context sequence of a loaded model: context `ctx`, sequence `seq` within it.
import type { ChatHistoryItem } from "node-llama-cpp";

interface Slot {
  modelId: string;
  ctx: number;
  seq: number;
}

export type WorkerRequest = { id: number } & (
  | { op: "init" }
  | { op: "load"; modelId: string; file: string; contextSize: number; sequences: number[]; threads: number }
  | ({ op: "open"; history: ChatHistoryItem[] } & Slot)
  | ({
      op: "prompt";
      text: string;
      maxTokens: number;
      temperature?: number;
      jsonSchema?: object;
      validate?: boolean;
      /** Send each text chunk as it is generated. */
      stream: boolean;
    } & Slot)
  | { op: "abort"; target: number }
  | ({ op: "close" } & Slot)
  | { op: "embed"; modelId: string; texts: string[]; contextSize: number; threads: number }
  | { op: "count"; modelId: string; text: string }
  | { op: "unload"; modelId: string }
  | { op: "dispose" }
);

/** The answer to a request, or a text chunk of a prompt under way (`token`). */
export type WorkerReply =
  | { id: number; value: unknown }
  | { id: number; error: { message: string; name?: string; status?: number; code?: string } }
  | { id: number; token: string };

/** What "load" answers: the weights' size and each context's state size, in bytes. */
export interface LoadReply {
  size: number;
  stateSizes: number[];
}
