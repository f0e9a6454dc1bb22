import { ApiError } from "$lib/api/client";
import { t } from "$lib/i18n";

/** A message shown to the user in the notice area. */
export interface Notice {
  id: number;
  text: string;
}

/** Notices currently shown (newest last). */
export const notices = $state<Notice[]>([]);
let nextId = 1;

/** Turns any failure into a readable message. */
export function messageOf(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof TypeError) return t("error.network");
  return t("error.unexpected");
}

/** The one error handler of the UI: every failed action comes here. */
export function handleError(err: unknown): void {
  console.warn("action failed", err);
  notices.push({ id: nextId++, text: messageOf(err) });
}

/** Removes a notice. */
export function dismiss(id: number): void {
  const i = notices.findIndex((n) => n.id === id);
  if (i >= 0) notices.splice(i, 1);
}

/** Runs a UI action, sending any failure to handleError; true when it succeeded. */
export async function perform(action: () => Promise<unknown>): Promise<boolean> {
  try {
    await action();
    return true;
  } catch (err) {
    handleError(err);
    return false;
  }
}
