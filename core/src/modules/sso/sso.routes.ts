import { createHash, randomBytes } from "node:crypto";
import coBody from "co-body";
import type { Context } from "koa";
import type { Knex } from "knex";
import { z } from "zod";
import type { Config } from "../../config/schema.js";
import type { Outbox } from "../../platform/bus/outbox.js";
import { withOrg } from "../../platform/db/tenant.js";
import { dataOf, type Api } from "../../platform/http/api.js";
import { AppError } from "../../platform/http/errors.js";
import { audit } from "../identity/audit.js";
import {
  checkCsrf,
  clearSessionCookie,
  sessionCookieName,
  setSessionCookie,
  type Authenticator,
} from "../identity/auth.js";
import { profileOfNewSession, requestMeta, type Limiters } from "../identity/identity.routes.js";
import * as identity from "../identity/identity.service.js";
import { meSchema } from "../identity/identity.schemas.js";
import { Directory, DirectoryError, ldapConfigSchema, type DirectoryUser } from "./ldap.js";
import {
  parseIdpMetadata,
  samlConfigSchema,
  SamlRejection,
  ServiceProvider,
  serviceProviderMetadata,
  escapeMarkup,
  type SamlResult,
} from "./saml.js";
import * as s from "./sso.schemas.js";
import * as sso from "./sso.service.js";
import { enqueueSync } from "./sso.sync.js";

const BINDING_COOKIE = "ws_saml_binding";
const REQUEST_TTL_MINUTES = 10;
const tags = ["sso"];
const hash = (v: string) => createHash("sha256").update(v).digest("hex");
const meta = requestMeta;

/** JSON routes answer an unknown organization with the API's 404; any other failure stays what it is. */
const unknownOrgIs404 = (err: unknown): never => {
  if (err instanceof sso.SsoError) throw AppError.notFound(err.message);
  throw err;
};

/** A path inside this server to go back to after sign-in; anything else becomes "/". */
const safeReturnTo = (v: string | undefined) =>
  v && /^\/(?![/\\])[^\s\\]*$/.test(v) && v.length < 500 ? v : "/";

const esc = escapeMarkup;

/** A small self-contained page for the browser (failures and test results): no script, nothing from elsewhere. */
function page(ctx: Context, status: number, title: string, body: string): string {
  ctx.status = status;
  ctx.type = "text/html; charset=utf-8";
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${esc(title)} · WorkSynapse</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 42rem; margin: 4rem auto; padding: 0 1rem; line-height: 1.5; color: #1f2933">
<main><h1 style="font-size: 1.5rem">${esc(title)}</h1>${body}</main></body></html>`;
}

function failurePage(ctx: Context, status: number, message: string, reason: string): string {
  return page(
    ctx,
    status,
    "Sign-in failed",
    `<p>${esc(message)}</p><p style="color: #52606d">Reason code: <code>${esc(reason)}</code>. Your administrator can find this attempt in the audit log.</p><p><a href="/login">Back to sign-in</a></p>`,
  );
}

/** The script of the resubmit page: inline scripts are forbidden by our CSP, a same-origin file is not. */
const RESUBMIT_JS = 'document.getElementById("ws-resubmit").submit();\n';

/**
 * Whether a (not yet verified) response answers a request of ours: only those are bound to a browser.
 * An unsolicited, IdP-initiated response carries no InResponseTo and needs no cookie.
 */
function answersARequest(samlResponse: string): boolean {
  const xml = Buffer.from(samlResponse, "base64").toString("utf8");
  return /\sInResponseTo\s*=/.test(xml);
}

/** A page that posts the IdP's response back to the same address from our own origin (see the ACS route). */
function resubmitPage(ctx: Context, form: Record<string, unknown>): string {
  const fields = ["SAMLResponse", "RelayState"]
    .filter((k) => typeof form[k] === "string")
    .map((k) => `<input type="hidden" name="${k}" value="${esc(form[k] as string)}">`)
    .join("");
  return page(
    ctx,
    200,
    "Signing in",
    `<form id="ws-resubmit" method="post" action="${esc(ctx.path)}">${fields}<input type="hidden" name="ws_resubmitted" value="1"><p>Signing you in…</p><noscript><button type="submit">Continue</button></noscript></form><script src="/api/sso/saml/resubmit.js"></script>`,
  );
}

/** The SP's own addresses for an organization, from the configured public URL (else the request's origin). */
export function spEndpoints(config: Config, ctx: Context, slug: string) {
  const base = config.auth.publicUrl
    ? new URL(config.auth.publicUrl).origin
    : `${ctx.protocol}://${ctx.host}`;
  const root = `${base}/api/sso/saml/${encodeURIComponent(slug)}`;
  return {
    entityId: `${root}/metadata`,
    acsUrl: `${root}/acs`,
    sloUrl: `${root}/slo`,
    metadataUrl: `${root}/metadata`,
  };
}

/** Registers sign-in through SAML and LDAP and the SSO administration routes. */
export function registerSsoRoutes(
  api: Api,
  deps: {
    knex: Knex | null;
    config: Config;
    masterKey?: string;
    outbox: Outbox;
    authenticator: Authenticator | null;
    limiters: Limiters | null;
  },
): void {
  const { config } = deps;
  const need = <T>(v: T | null | undefined): T => {
    if (!v) throw AppError.unavailable("Sign-in is not configured on this process.");
    return v;
  };

  const meAfterSignIn = (ctx: Context, token: string) =>
    profileOfNewSession(need(deps.knex), need(deps.authenticator), ctx, token);

  const personOfSaml = (cfg: z.infer<typeof samlConfigSchema>, r: SamlResult): sso.ExternalPerson => {
    const firstOf = (name: string) => r.attributes[name]?.find((v) => v !== "") ?? "";
    const email = firstOf(cfg.emailAttribute) || (/^[^@\s]+@[^@\s]+$/.test(r.nameId) ? r.nameId : "");
    return {
      externalId: r.nameId,
      email,
      name: firstOf(cfg.nameAttribute),
      groups: r.attributes[cfg.groupsAttribute] ?? [],
    };
  };

  // ----- public: sign-in page options, LDAP sign-in -----
  api.publicRoute({
    method: "get",
    path: "/api/auth/sso-options",
    operationId: "listSsoOptions",
    summary: "The single sign-on options the sign-in page offers",
    tags,
    response: dataOf(z.array(s.signInOptionSchema)),
    handler: async () => ({ data: await sso.signInOptions(need(deps.knex)) }),
  });

  api.publicRoute({
    method: "post",
    path: "/api/auth/ldap",
    operationId: "signInWithDirectory",
    summary: "Sign in with a directory (LDAP / Active Directory) account; sets the session cookie",
    tags,
    body: s.ldapSignInBody,
    response: dataOf(meSchema),
    errors: [401, 403, 404, 409, 429, 503],
    handler: async (ctx, { body }) => {
      checkCsrf(ctx, config);
      const knex = need(deps.knex);
      await need(deps.limiters).signIn(ctx.ip, attemptAt(ctx, body.organization));
      const { orgId } = await sso.orgOfSlug(knex, body.organization).catch(unknownOrgIs404);
      const p = await withOrg(knex, orgId, (trx) => sso.findProvider(trx, "ldap"));
      if (!p?.enabled) throw AppError.notFound("This organization does not sign in with a directory.");
      let person: DirectoryUser;
      try {
        person = await sso.directoryOf(p, need(deps.masterKey)).authenticate(body.login, body.password);
      } catch (err) {
        if (!(err instanceof DirectoryError)) throw err;
        await sso.auditSsoFailure(knex, orgId, "ldap", err.reason, err.message, meta(ctx), {
          // eslint-disable-next-line no-control-regex
          login: body.login.replace(/[\u0000-\u001f\u007f]/g, "?").slice(0, 200),
        });
        if (err.reason === "blank_password" || err.reason === "bad_login")
          throw new AppError(400, err.reason, err.message);
        if (
          err.reason === "unreachable" ||
          err.reason === "tls_failed" ||
          err.reason === "service_bind_failed"
        )
          throw new AppError(
            503,
            "directory_unavailable",
            "The directory cannot be reached right now. Try again later.",
          );
        // Unknown login, several matches or a wrong password: one answer, so logins cannot be probed.
        throw new AppError(401, "invalid_credentials", "The login name or password is wrong.");
      }
      let session: { token: string; expires: Date };
      try {
        session = await withOrg(knex, orgId, (trx) =>
          sso.signInExternal(trx, config, p, { ...person, groups: person.groups }, meta(ctx)),
        );
      } catch (err) {
        if (!(err instanceof sso.SsoError)) throw err;
        await sso.auditSsoFailure(knex, orgId, "ldap", err.reason, err.message, meta(ctx), {
          login: person.login,
        });
        throw new AppError(err.status, err.reason, err.message);
      }
      setSessionCookie(ctx, session.token, session.expires);
      return { data: await meAfterSignIn(ctx, session.token) };
    },
  });

  /** The per-address sign-in limit for browser-facing SSO routes: a page (not JSON) when it is exceeded. */
  /** A sign-in attempt at an organization's page: a refusal is audited in that organization's log. */
  const attemptAt = (ctx: Context, slug: string) => ({
    userAgent: meta(ctx).userAgent,
    org: async () => (await sso.orgOfSlug(need(deps.knex), slug).catch(() => null))?.orgId ?? null,
  });

  async function limitPage(ctx: Context, slug: string): Promise<string | undefined> {
    try {
      await need(deps.limiters).signIn(ctx.ip, attemptAt(ctx, slug));
      return undefined;
    } catch (err) {
      if (!(err instanceof AppError) || err.status !== 429) throw err;
      for (const [k, v] of Object.entries(err.headers ?? {})) ctx.set(k, v);
      return failurePage(ctx, 429, err.message, err.code);
    }
  }

  // ----- public: SAML service provider -----
  /** The organization's SAML provider; in `trx` when the caller already holds the organization's transaction. */
  const samlProvider = async (slug: string, trx?: Knex.Transaction) => {
    const knex = need(deps.knex);
    const { orgId } = await sso.orgOfSlug(trx ?? knex, slug);
    const p = trx
      ? await sso.findProvider(trx, "saml")
      : await withOrg(knex, orgId, (t) => sso.findProvider(t, "saml"));
    if (!p?.enabled)
      throw new sso.SsoError("not_configured", "This organization does not sign in with SAML.", 404);
    return { orgId, p, cfg: samlConfigSchema.parse(p.config) };
  };

  api.publicRoute({
    method: "get",
    path: "/api/sso/saml/:org/metadata",
    operationId: "getSamlMetadata",
    summary: "The service provider metadata to import at the identity provider",
    tags,
    params: s.orgParams,
    response: z.string(),
    responseType: "application/samlmetadata+xml",
    errors: [404],
    handler: async (ctx, { params }) => {
      await sso.orgOfSlug(need(deps.knex), params.org).catch(unknownOrgIs404);
      ctx.set("Content-Disposition", `inline; filename="worksynapse-${params.org}-sp.xml"`);
      return serviceProviderMetadata(spEndpoints(config, ctx, params.org));
    },
  });

  /** Starts a sign-in: stores the request bound to this browser, then sends the browser to the IdP. */
  async function startSamlRequest(
    ctx: Context,
    slug: string,
    opts: { mode: "sign_in" | "test"; returnTo: string; testerId?: string },
    trx?: Knex.Transaction,
  ): Promise<string> {
    // One connection at a time: the embedded database has only one, so never open a second transaction.
    const { orgId, cfg } = await samlProvider(slug, trx);
    let nonce = ctx.cookies.get(BINDING_COOKIE);
    if (!nonce || !/^[A-Za-z0-9_-]{43}$/.test(nonce)) nonce = randomBytes(32).toString("base64url");
    ctx.cookies.set(BINDING_COOKIE, nonce, {
      httpOnly: true,
      // The IdP posts back across sites: over TLS the cookie must be SameSite=None; plain HTTP cannot use it.
      sameSite: ctx.secure ? "none" : "lax",
      secure: ctx.secure,
      path: "/api/sso/saml",
      maxAge: REQUEST_TTL_MINUTES * 60_000,
      overwrite: true,
    });
    const requestId = `_${randomBytes(20).toString("hex")}`;
    const store = async (trx: Knex.Transaction) => {
      await trx("saml_requests").where("expires_at", "<", trx.fn.now()).delete();
      await trx("saml_requests").insert({
        id: requestId,
        org_id: orgId,
        binding: hash(nonce),
        mode: opts.mode,
        return_to: opts.returnTo,
        tester_id: opts.testerId ?? null,
        expires_at: trx.raw("now() + make_interval(mins => ?)", [REQUEST_TTL_MINUTES]),
      });
    };
    await (trx ? store(trx) : withOrg(need(deps.knex), orgId, store));
    return new ServiceProvider(cfg, spEndpoints(config, ctx, slug), requestId).authorizeUrl("");
  }

  api.publicRoute({
    method: "get",
    path: "/api/sso/saml/:org/login",
    operationId: "startSamlSignIn",
    summary: "Starts SAML sign-in (SP-initiated): redirects to the identity provider",
    tags,
    params: s.orgParams,
    query: s.loginQuery,
    status: 302,
    errors: [404, 429],
    handler: async (ctx, { params, query }) => {
      // Each start stores a request: limited per address like any sign-in attempt.
      const limited = await limitPage(ctx, params.org);
      if (limited) return limited;
      try {
        const url = await startSamlRequest(ctx, params.org, {
          mode: "sign_in",
          returnTo: safeReturnTo(query.returnTo),
        });
        ctx.redirect(url);
        return "Redirecting to the identity provider.";
      } catch (err) {
        if (err instanceof sso.SsoError) return failurePage(ctx, err.status, err.message, err.reason);
        throw err;
      }
    },
  });

  api.get("/api/sso/saml/resubmit.js", (ctx) => {
    ctx.type = "text/javascript; charset=utf-8";
    ctx.set("Cache-Control", "public, max-age=3600");
    ctx.body = RESUBMIT_JS;
  });

  api.publicRoute({
    method: "post",
    path: "/api/sso/saml/:org/acs",
    operationId: "samlAssertionConsumer",
    summary: "The assertion consumer service (HTTP-POST binding): checks the response and signs in",
    tags,
    params: s.orgParams,
    status: 303,
    responseType: "text/html",
    errors: [401, 403, 404, 409, 429],
    handler: async (ctx, { params }) => {
      const knex = need(deps.knex);
      let orgId: string;
      try {
        ({ orgId } = await sso.orgOfSlug(knex, params.org));
      } catch (err) {
        if (err instanceof sso.SsoError) return failurePage(ctx, 404, err.message, err.reason);
        throw err;
      }
      const limited = await limitPage(ctx, params.org);
      if (limited) return limited;
      const fail = async (reason: string, message: string, status = 401) => {
        await sso.auditSsoFailure(knex, orgId, "saml", reason, message, meta(ctx));
        return failurePage(ctx, status, message, reason);
      };
      if (!ctx.is("application/x-www-form-urlencoded"))
        return fail("malformed", "The identity provider must post the response as a form.", 415);
      let form: Record<string, unknown>;
      try {
        form = (await coBody.form(ctx, { limit: "1mb" })) as Record<string, unknown>;
      } catch {
        return fail("malformed", "The posted form could not be read.", 400);
      }
      const samlResponse = form.SAMLResponse;
      if (typeof samlResponse !== "string" || !samlResponse)
        return fail("malformed", "The form carries no SAMLResponse.", 400);
      const binding = ctx.cookies.get(BINDING_COOKIE);
      // Over plain HTTP the binding cookie is SameSite=Lax, which a browser leaves out of the IdP's cross-site
      // POST. The response is then posted once more from a page of ours (same-site, so the cookie comes): the
      // binding still holds, since only the browser that started the sign-in has the cookie.
      if (!binding && form.ws_resubmitted === undefined && answersARequest(samlResponse))
        return resubmitPage(ctx, form);
      try {
        const outcome = await withOrg(knex, orgId, async (trx) => {
          const p = await sso.findProvider(trx, "saml");
          if (!p?.enabled)
            throw new sso.SsoError("not_configured", "This organization does not sign in with SAML.", 404);
          const cfg = samlConfigSchema.parse(p.config);
          const r = await new ServiceProvider(cfg, spEndpoints(config, ctx, params.org)).validate(
            samlResponse,
          );
          let mode = "sign_in";
          let returnTo = "/";
          if (r.inResponseTo) {
            const req = (await trx("saml_requests")
              .where({ id: r.inResponseTo })
              .where("expires_at", ">", trx.fn.now())
              .first()) as Record<string, unknown> | undefined;
            if (!req)
              throw new SamlRejection(
                "unknown_in_response_to",
                "This sign-in was not started here or has expired. Start again.",
              );
            if (!binding || req.binding !== hash(binding))
              throw new SamlRejection(
                "other_browser",
                "This sign-in was started in another browser. Start again here.",
              );
            const used = await trx("saml_requests")
              .where({ id: r.inResponseTo })
              .whereNull("used_at")
              .update({ used_at: trx.fn.now() });
            if (used === 0) throw new SamlRejection("replayed", "This sign-in response was already used.");
            mode = req.mode as string;
            returnTo = req.return_to as string;
          } else if (!cfg.allowIdpInitiated) {
            throw new SamlRejection(
              "unsolicited",
              "Sign-in must start at WorkSynapse (IdP-initiated sign-in is off).",
            );
          }
          const fresh = await trx.raw(
            "insert into saml_replay (org_id, assertion_id, expires_at) values (?, ?, ?) on conflict do nothing returning assertion_id",
            [orgId, r.assertionId, r.notOnOrAfter],
          );
          if (fresh.rows.length === 0)
            throw new SamlRejection("replayed", "This sign-in response was already used.");
          await trx("saml_replay").where("expires_at", "<", trx.fn.now()).delete();
          const person = personOfSaml(cfg, r);
          if (mode === "test") {
            const roleIds = sso.rolesForGroups(p, person.groups);
            const roles = roleIds.length ? await trx("roles").whereIn("id", roleIds).pluck("name") : [];
            return { test: { r, person, roles: roles as string[] }, session: undefined, returnTo };
          }
          return {
            test: undefined,
            session: await sso.signInExternal(trx, config, p, person, meta(ctx), {
              nameId: r.nameId,
              nameIdFormat: r.nameIdFormat,
              sessionIndex: r.sessionIndex,
            }),
            returnTo,
          };
        });
        if (outcome.test) {
          const { r, person, roles } = outcome.test;
          const rows = Object.entries(r.attributes)
            .map(
              ([k, v]) =>
                `<tr><th scope="row" style="text-align: left">${esc(k)}</th><td>${esc(v.join(", "))}</td></tr>`,
            )
            .join("");
          return page(
            ctx,
            200,
            "SAML test succeeded",
            `<p>The identity provider's response passed every check. Nobody was signed in.</p>
<dl><dt>NameID</dt><dd>${esc(r.nameId)}</dd><dt>Email</dt><dd>${esc(person.email || "(none)")}</dd><dt>Name</dt><dd>${esc(person.name || "(none)")}</dd>
<dt>Groups</dt><dd>${esc(person.groups.join(", ") || "(none)")}</dd><dt>Roles they would get</dt><dd id="mapped-roles">${esc(roles.join(", ") || "none: sign-in would be refused")}</dd></dl>
<table><caption style="text-align: left">Attributes</caption>${rows}</table><p><a href="/admin/sso">Back to single sign-on settings</a></p>`,
          );
        }
        const session = outcome.session as { token: string; expires: Date };
        setSessionCookie(ctx, session.token, session.expires);
        ctx.status = 303;
        ctx.redirect(safeReturnTo(outcome.returnTo));
        return "Signed in.";
      } catch (err) {
        if (err instanceof SamlRejection) return fail(err.reason, err.message, 401);
        if (err instanceof sso.SsoError) return fail(err.reason, err.message, err.status);
        throw err;
      }
    },
  });

  api.publicRoute({
    method: "get",
    path: "/api/sso/saml/:org/logout",
    operationId: "startSamlLogout",
    summary: "Signs out here and at the identity provider (SP-initiated single logout)",
    tags,
    params: s.orgParams,
    query: s.logoutQuery,
    status: 302,
    handler: async (ctx, { params, query }) => {
      const knex = need(deps.knex);
      const cookie = ctx.cookies.get(sessionCookieName(ctx.secure));
      let target = "/login";
      if (cookie) {
        try {
          const id = await need(deps.authenticator).identifySession(cookie, meta(ctx));
          const { orgId } = await sso.orgOfSlug(knex, params.org);
          // The session id in the link (known to the UI only) keeps other sites from signing people out.
          if (id.orgId === orgId) {
            target = await knex.transaction(async (trx) => {
              const caller = await id.load(trx); // enters the organization
              if (caller.sessionId !== query.session) return "/login";
              const row = (await trx("sessions").where({ id: caller.sessionId }).first()) as Record<
                string,
                string | null
              >;
              await identity.signOut({ caller, trx });
              const p = await sso.findProvider(trx, "saml");
              if (!p?.enabled || !row.saml_name_id || row.sso_provider_id !== p.id) return "/login";
              const cfg = samlConfigSchema.parse(p.config);
              if (!cfg.idpSloUrl) return "/login";
              return new ServiceProvider(cfg, spEndpoints(config, ctx, params.org)).logoutUrl({
                nameId: row.saml_name_id,
                nameIdFormat: row.saml_name_id_format ?? "",
                sessionIndex: row.saml_session_index ?? null,
              });
            });
          }
        } catch (err) {
          if (!(err instanceof AppError || err instanceof sso.SsoError)) throw err;
        }
      }
      clearSessionCookie(ctx);
      ctx.redirect(target);
      return "Signing out.";
    },
  });

  api.publicRoute({
    method: "get",
    path: "/api/sso/saml/:org/slo",
    operationId: "samlSingleLogoutService",
    summary:
      "Single logout service (HTTP-Redirect): the IdP's answer to our logout, or its own signed request",
    tags,
    params: s.orgParams,
    status: 302,
    errors: [401, 404],
    handler: async (ctx, { params }) => {
      const knex = need(deps.knex);
      let orgId: string;
      try {
        ({ orgId } = await sso.orgOfSlug(knex, params.org));
      } catch (err) {
        if (err instanceof sso.SsoError) return failurePage(ctx, 404, err.message, err.reason);
        throw err;
      }
      try {
        const next = await withOrg(knex, orgId, async (trx) => {
          const p = await sso.findProvider(trx, "saml");
          if (!p?.enabled)
            throw new sso.SsoError("not_configured", "This organization does not sign in with SAML.", 404);
          const sp = new ServiceProvider(
            samlConfigSchema.parse(p.config),
            spEndpoints(config, ctx, params.org),
          );
          const m = await sp.validateLogout(ctx.query, ctx.querystring);
          if (m.kind === "response") return "/login";
          // The IdP ends a person's sessions (another application started the logout).
          const q = trx("sessions")
            .where({ sso_provider_id: p.id, saml_name_id: m.nameId })
            .whereNull("revoked_at");
          if (m.sessionIndex) q.where({ saml_session_index: m.sessionIndex });
          const ended = await q.update({ revoked_at: trx.fn.now() });
          await audit(trx, {
            orgId,
            actorType: "system",
            actorId: "saml-slo",
            action: "auth.sso_logout",
            targetType: "sso_provider",
            targetId: p.id,
            ip: ctx.ip,
            outcome: "success",
            details: { nameId: m.nameId.slice(0, 200), sessionsEnded: ended },
          });
          return sp.logoutResponseUrl(m.profile);
        });
        ctx.redirect(next);
        return "Signed out.";
      } catch (err) {
        const known = err instanceof SamlRejection || err instanceof sso.SsoError;
        if (!known) throw err;
        const reason = err.reason;
        await sso.auditSsoFailure(knex, orgId, "saml", reason, err.message, meta(ctx), { step: "logout" });
        return failurePage(ctx, err instanceof sso.SsoError ? err.status : 400, err.message, reason);
      }
    },
  });

  // ----- administration -----
  const permission = "admin.sso";
  const roleNames = async (trx: Knex.Transaction, ids: string[]) =>
    ids.length ? ((await trx("roles").whereIn("id", ids).pluck("name")) as string[]) : [];

  api.route({
    method: "get",
    path: "/api/sso",
    operationId: "getSsoSettings",
    summary: "Single sign-on settings: SAML and LDAP providers, policy, and this service's SAML addresses",
    tags,
    permission,
    response: dataOf(s.ssoOverviewSchema),
    handler: async (ctx, _in, { trx }) => {
      const org = await trx("organizations").first("slug");
      return {
        data: {
          saml: sso.presentProvider(await sso.findProvider(trx, "saml")),
          ldap: sso.presentProvider(await sso.findProvider(trx, "ldap")),
          policy: await sso.getPolicy(trx),
          serviceProvider: spEndpoints(config, ctx, org.slug as string),
        },
      };
    },
  });

  // One static route per kind (not /api/sso/:kind): path parameters of this API are object ids.
  for (const kind of ["saml", "ldap"] as const) {
    const Kind = kind === "saml" ? "Saml" : "Ldap";
    const name = kind === "saml" ? "SAML identity provider" : "LDAP / Active Directory directory";
    api.route({
      method: "put",
      path: `/api/sso/${kind}`,
      operationId: `save${Kind}Provider`,
      summary: `Creates or replaces the organization's ${name}`,
      tags,
      permission,
      body: s.saveProviderBody,
      response: dataOf(s.providerSchema),
      handler: async (_ctx, { body }, scope) => ({
        data: sso.presentProvider(await sso.saveProvider(scope, need(deps.masterKey), kind, body)),
      }),
    });
    api.route({
      method: "delete",
      path: `/api/sso/${kind}`,
      operationId: `delete${Kind}Provider`,
      summary: `Removes the organization's ${name}; its people keep their accounts and local roles`,
      tags,
      permission,
      status: 204,
      handler: async (_ctx, _in, scope) => {
        await sso.deleteProvider(scope, kind);
      },
    });
  }

  api.route({
    method: "put",
    path: "/api/sso-policy",
    operationId: "setSsoPolicy",
    summary: "Requires SSO for everyone but the named break-glass owner, or lifts the requirement",
    tags,
    permission,
    body: s.policySchema,
    response: dataOf(s.policySchema),
    handler: async (_ctx, { body }, scope) => ({ data: await sso.setPolicy(scope, body) }),
  });

  api.route({
    method: "post",
    path: "/api/sso/saml/metadata",
    operationId: "readSamlMetadata",
    summary: "Reads an identity provider's metadata into settings (nothing is saved)",
    tags,
    permission,
    body: s.metadataImportBody,
    response: dataOf(s.metadataImportSchema),
    handler: async (_ctx, { body }) => {
      try {
        return { data: parseIdpMetadata(body.xml) };
      } catch (err) {
        if (err instanceof SamlRejection) throw new AppError(400, err.reason, err.message);
        throw err;
      }
    },
  });

  api.route({
    method: "post",
    path: "/api/sso/saml/test",
    operationId: "startSamlTest",
    summary: "Starts a test sign-in: the IdP's answer is checked and shown, and nobody is signed in",
    tags,
    permission,
    response: dataOf(z.object({ url: z.string() })),
    errors: [404],
    handler: async (ctx, _in, { caller, trx }) => {
      const org = await trx("organizations").first("slug");
      try {
        const url = await startSamlRequest(
          ctx,
          org.slug as string,
          { mode: "test", returnTo: "/admin/sso", testerId: caller.userId },
          trx,
        );
        return { data: { url } };
      } catch (err) {
        if (err instanceof sso.SsoError)
          throw new AppError(
            err.status === 404 ? 400 : err.status,
            err.reason,
            "Save and enable the SAML settings first.",
          );
        throw err;
      }
    },
  });

  /** The directory of the given unsaved settings (the saved password when none is given), or of the saved ones. */
  const directoryFor = async (
    trx: Knex.Transaction,
    body: { config?: Record<string, unknown>; secret?: string },
  ) => {
    const saved = await sso.findProvider(trx, "ldap");
    if (!body.config) {
      if (!saved)
        throw new AppError(400, "not_configured", "Save the directory settings first, or send them.");
      return { dir: sso.directoryOf(saved, need(deps.masterKey)), provider: saved };
    }
    const parsed = ldapConfigSchema.safeParse(body.config);
    if (!parsed.success)
      throw new AppError(400, "validation_failed", "The directory settings are not valid.", {
        fields: parsed.error.issues.map((i) => ({
          path: ["config", ...i.path].join("."),
          message: i.message,
        })),
      });
    const secret = body.secret ?? (saved ? sso.openProviderSecret(saved, need(deps.masterKey)) : "");
    return { dir: new Directory(parsed.data, secret), provider: saved };
  };
  const directoryErrorToApp = (err: unknown) => {
    if (err instanceof DirectoryError)
      return new AppError(422, `directory_${err.reason}`, err.message, { reason: err.reason });
    return err;
  };

  api.route({
    method: "post",
    path: "/api/sso/ldap/test",
    operationId: "testDirectoryConnection",
    summary: "Connects to the directory, binds as the service account and counts the people the filter finds",
    tags,
    permission,
    body: s.ldapTestBody,
    response: dataOf(s.ldapTestSchema),
    errors: [422],
    handler: async (_ctx, { body }, { trx }) => {
      const { dir } = await directoryFor(trx, body);
      try {
        return { data: { ok: true as const, ...(await dir.test()) } };
      } catch (err) {
        throw directoryErrorToApp(err);
      }
    },
  });

  api.route({
    method: "post",
    path: "/api/sso/ldap/test-user",
    operationId: "testDirectoryUser",
    summary:
      "Looks a person up (and with a password, tries their sign-in) and shows the roles they would get",
    tags,
    permission,
    body: s.ldapTestUserBody,
    response: dataOf(s.ldapTestUserSchema),
    errors: [422],
    handler: async (_ctx, { body }, { trx }) => {
      const { dir, provider } = await directoryFor(trx, body);
      try {
        const person = body.password
          ? await dir.authenticate(body.login, body.password)
          : await dir.lookup(body.login);
        const roles = provider ? await roleNames(trx, sso.rolesForGroups(provider, person.groups)) : [];
        return { data: { person: { ...person, roles }, passwordChecked: !!body.password } };
      } catch (err) {
        throw directoryErrorToApp(err);
      }
    },
  });

  api.route({
    method: "post",
    path: "/api/sso/ldap/preview",
    operationId: "previewDirectoryMapping",
    summary: "Dry run of the group-to-role mapping: who in the directory would get which role",
    tags,
    permission,
    body: s.previewBody,
    response: dataOf(s.previewSchema),
    errors: [422],
    handler: async (_ctx, { body }, { trx }) => {
      const saved = await sso.findProvider(trx, "ldap");
      if (!saved) throw new AppError(400, "not_configured", "Save the directory settings first.");
      const mapping: sso.ProviderRow = {
        ...saved,
        groupRoles: body.groupRoles ?? saved.groupRoles,
        defaultRoleId: body.defaultRoleId === undefined ? saved.defaultRoleId : body.defaultRoleId,
      };
      let people: DirectoryUser[];
      try {
        people = await sso.directoryOf(saved, need(deps.masterKey)).listUsers(1000);
      } catch (err) {
        throw directoryErrorToApp(err);
      }
      const names = new Map(
        ((await trx("roles").select("id", "name")) as { id: string; name: string }[]).map((r) => [
          r.id,
          r.name,
        ]),
      );
      const shown = people.slice(0, 200);
      return {
        data: {
          people: shown.map((p) => ({
            ...p,
            roles: sso.rolesForGroups(mapping, p.groups).map((id) => names.get(id) ?? id),
          })),
          total: people.length,
          truncated: people.length > shown.length,
        },
      };
    },
  });

  api.route({
    method: "post",
    path: "/api/sso/ldap/sync",
    operationId: "syncDirectory",
    summary:
      "Runs the directory sync now (a background job): roles follow groups, removed people lose access",
    tags,
    permission,
    status: 202,
    response: dataOf(z.object({ jobId: z.string() })),
    handler: async (_ctx, _in, { caller, trx }) => {
      const p = await sso.findProvider(trx, "ldap");
      if (!p?.enabled) throw new AppError(400, "not_configured", "Enable the directory settings first.");
      return { data: { jobId: await enqueueSync(trx, deps.outbox, caller.orgId, p.id) } };
    },
  });
}
