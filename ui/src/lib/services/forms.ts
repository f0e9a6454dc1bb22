import { ApiError } from "$lib/api/client";
import { messageOf } from "$lib/services/errors.svelte";

/** The message a form shows for a failed submit: the API's field messages when it sent some. */
export function formError(err: unknown): string {
  if (err instanceof ApiError) {
    const fields = (err.details as { fields?: { path: string; message: string }[] } | undefined)?.fields;
    if (fields?.length) return fields.map((f) => (f.path ? `${f.path}: ${f.message}` : f.message)).join(" ");
  }
  return messageOf(err);
}
