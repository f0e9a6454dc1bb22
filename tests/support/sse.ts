/** Reads a server-sent-event stream to its end, into its events (`[DONE]` stays a string). */
export async function readEvents(r: Response): Promise<{ event: string; data: unknown }[]> {
  const text = await r.text();
  return text
    .split("\n\n")
    .filter((block) => block && !block.startsWith(":"))
    .map((block) => {
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
      const data = /^data: (.*)$/m.exec(block)?.[1] ?? "";
      return { event, data: data === "[DONE]" ? data : (JSON.parse(data) as unknown) };
    });
}
