import { error } from "@sveltejs/kit";
import { MODULES } from "$lib/modules";
import { t } from "$lib/i18n";
import type { PageLoad } from "./$types";

export const load: PageLoad = ({ params }) => {
  const module = MODULES.find((m) => m.id === params.module);
  if (!module) error(404, { message: t("error.notFound") });
  return { module };
};
