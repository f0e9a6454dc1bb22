import type { SettingInfo } from "../core/src/config/load.js";
/** Markdown table of every setting. */
export function renderConfigTable(settings: SettingInfo[]): string;
