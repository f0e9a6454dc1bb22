/** Markdown table of every operation of an OpenAPI document. */
export function renderApiTable(doc: unknown): string;
