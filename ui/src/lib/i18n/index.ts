import { en } from "./en";

/** A message key; every user-facing string has one. */
export type MessageKey = keyof typeof en;
type Messages = Record<MessageKey, string>;

const locales: Record<string, Messages> = { en };

function pickLocale(): string {
  const wanted = typeof navigator === "undefined" ? [] : navigator.languages;
  for (const tag of wanted) {
    const base = tag.toLowerCase().split("-")[0] ?? "";
    if (base in locales) return base;
  }
  return "en";
}

/** The active locale's code (used for <html lang>). */
export const locale = pickLocale();
const messages: Messages = locales[locale] ?? en;

/** Translates a key, filling `{name}` placeholders from params. */
export function t(key: MessageKey, params: Record<string, string | number> = {}): string {
  const text = messages[key] ?? en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name: string) => String(params[name] ?? `{${name}}`));
}
