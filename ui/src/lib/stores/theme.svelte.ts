/** The theme choices. */
export type Theme = "light" | "dark" | "system";
const KEY = "worksynapse.theme";

function initial(): Theme {
  const saved = typeof localStorage === "undefined" ? null : localStorage.getItem(KEY);
  return saved === "light" || saved === "dark" ? saved : "system";
}

/** The chosen theme (persisted in this browser). */
export const theme = $state<{ value: Theme }>({ value: initial() });

/** Applies and remembers a theme. */
export function applyTheme(value: Theme): void {
  theme.value = value;
  document.documentElement.dataset.theme = value;
  localStorage.setItem(KEY, value);
}
