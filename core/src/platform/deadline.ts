/**
 * Waits for `work` at most `ms`: past it, rejects with `onTimeout()` (the work itself goes on, unobserved).
 * Used wherever a request waits on something that can stall (the index, the bus), so it answers in time.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(onTimeout()), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
