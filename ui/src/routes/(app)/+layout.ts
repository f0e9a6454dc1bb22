import { redirect } from "@sveltejs/kit";
import { loadMe, needsSetup } from "$lib/stores/session.svelte";
import type { LayoutLoad } from "./$types";

// Every app page needs a signed-in person: first run goes to setup, everyone else to sign-in.
export const load: LayoutLoad = async ({ url }) => {
  const me = await loadMe();
  if (!me) {
    if (await needsSetup()) redirect(307, "/setup");
    redirect(307, `/login?next=${encodeURIComponent(url.pathname)}`);
  }
  return { me };
};
