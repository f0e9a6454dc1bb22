import type { ChatMessage } from "../ai/runtime.js";

/** A history turn with its message number in the conversation. */
export interface Turn extends ChatMessage {
  seq: number;
}

/** What goes into one run's prompt. */
export interface ContextParts {
  /** Instructions and the tool list: always kept. */
  instructions: string;
  /** The user's memory facts, newest first. */
  memory: string[];
  /** The running summary of older turns. */
  summary: string;
  /** Earlier turns, oldest first. */
  history: Turn[];
  /** The new question (with any retrieved passages), always kept. */
  question: string;
}

/** The fitted context: system text and the turns that fit, and the turns left out. */
export interface FittedContext {
  system: string;
  history: Turn[];
  /** Turns left out for lack of room, oldest first (the next summary covers them). */
  dropped: Turn[];
  tokens: number;
}

/**
 * Fits a run's context into `budget` tokens: instructions and the question always; the memory facts and the
 * summary up to a share each; then as many of the newest turns as fit (always whole user/assistant pairs).
 * What does not fit is left out, oldest first.
 */
export async function fitContext(
  parts: ContextParts,
  budget: number,
  count: (text: string) => Promise<number>,
): Promise<FittedContext> {
  let used = (await count(parts.instructions)) + (await count(parts.question));
  const take = async (lines: string[], share: number) => {
    const out: string[] = [];
    let spent = 0;
    for (const line of lines) {
      const n = await count(line);
      if (spent + n > budget * share) break;
      spent += n;
      out.push(line);
    }
    used += spent;
    return out;
  };
  const memory = await take(parts.memory, 0.15);
  const summary = parts.summary ? (await take([parts.summary], 0.2))[0] : undefined;
  const system = [
    parts.instructions,
    memory.length ? `Facts the user asked you to remember:\n${memory.map((m) => `- ${m}`).join("\n")}` : "",
    summary ? `Summary of the earlier conversation:\n${summary}` : "",
  ]
    .filter(Boolean)
    .join("\n\n");

  const kept: Turn[] = [];
  let i = parts.history.length;
  while (i > 0) {
    // A pair: the assistant's answer and the question before it (or a lone turn at the edges).
    const pair = [parts.history[i - 1] as Turn];
    if (pair[0]?.role === "assistant" && i >= 2 && parts.history[i - 2]?.role === "user")
      pair.unshift(parts.history[i - 2] as Turn);
    let n = 0;
    for (const t of pair) n += await count(t.content);
    if (used + n > budget) break;
    used += n;
    kept.unshift(...pair);
    i -= pair.length;
  }
  // A history must start with a question.
  while (kept[0]?.role === "assistant") kept.shift();
  const dropped = parts.history.filter((t) => !kept.includes(t));
  return { system, history: kept, dropped, tokens: used };
}
