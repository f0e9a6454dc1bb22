/**
 * Gathers text that comes quickly: text pushed when nothing was written in the last `ms` is written at once;
 * text that follows sooner is written together at the end of that window (one write instead of one per piece).
 * So pieces that come tens of milliseconds apart still go the moment they exist. `flush` writes what is held
 * at once (the last pieces are never held). No dependencies: the inference thread uses it too.
 */
export function coalescer(write: (text: string) => void, ms: number) {
  let held = "";
  let timer: NodeJS.Timeout | undefined;
  let last = -Infinity;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (!held) return;
    const text = held;
    held = "";
    last = performance.now();
    write(text);
  };
  return {
    push(text: string): void {
      held += text;
      if (timer) return;
      const quiet = performance.now() - last;
      if (quiet >= ms) flush();
      else timer = setTimeout(flush, ms - quiet);
    },
    flush,
  };
}
