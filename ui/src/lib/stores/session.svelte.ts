import { api, unwrap } from "$lib/api/client";
import type { components } from "$lib/api/schema";

/** The signed-in person as the API describes them. */
export type Me = components["schemas"]["Me"];

/** Who is signed in (null when nobody is). */
export const session = $state<{ me: Me | null }>({ me: null });

/** True when the signed-in person holds a permission. */
export function can(permission: string): boolean {
  return session.me?.permissions.includes(permission) ?? false;
}

/** Loads the signed-in person; null on 401. */
export async function loadMe(): Promise<Me | null> {
  const { data, response } = await api.GET("/api/auth/me");
  session.me = response.ok && data ? data.data : null;
  return session.me;
}

/** Whether first-run setup is still open. */
export async function needsSetup(): Promise<boolean> {
  return (await unwrap(api.GET("/api/auth/setup"))).data.needsSetup;
}

/**
 * Signs out and forgets the person. A session from an identity provider with single logout leaves through the
 * server, which ends it and sends the browser to the IdP (and back to the sign-in page): returns false then.
 */
export async function signOut(): Promise<boolean> {
  const slo = session.me?.singleLogoutUrl;
  session.me = null;
  if (slo) {
    window.location.assign(slo);
    return false;
  }
  await api.POST("/api/auth/logout");
  return true;
}
