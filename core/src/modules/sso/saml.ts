// The SAML 2.0 service provider: @node-saml/node-saml checks signatures and conditions; this file adds the
// checks node-saml 5.1 leaves out (issuer, destination, recipient, status, bearer confirmation, requests bound
// to a browser, replay) and refuses the XML shapes signature-wrapping and comment attacks rely on.
import { SAML, type Profile, type SamlConfig as NodeSamlConfig } from "@node-saml/node-saml";
import { inflateRawSync } from "node:zlib";
import { DOMParser } from "@xmldom/xmldom";
import { z } from "zod";

const NS = {
  protocol: "urn:oasis:names:tc:SAML:2.0:protocol",
  assertion: "urn:oasis:names:tc:SAML:2.0:assertion",
  dsig: "http://www.w3.org/2000/09/xmldsig#",
  metadata: "urn:oasis:names:tc:SAML:2.0:metadata",
};
const BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success";
const POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
const REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";

const pem = z
  .string()
  .max(20_000)
  .transform((s) => normalizeCert(s))
  .refine((s) => /^[A-Za-z0-9+/=]{200,}$/.test(s), { message: "An X.509 certificate (PEM or base64)" });

/** An organization's IdP settings. */
export const samlConfigSchema = z.strictObject({
  idpEntityId: z.string().min(1).max(1000),
  idpSsoUrl: z.url({ protocol: /^https?$/ }).max(2000),
  idpSloUrl: z
    .url({ protocol: /^https?$/ })
    .max(2000)
    .or(z.literal(""))
    .default(""),
  /** The IdP's signing certificates, pinned: a signature is checked against these only, never KeyInfo. */
  idpCerts: z.array(pem).min(1).max(4),
  /** Attribute names to read; the NameID is used as email when it is an email address and no attribute is sent. */
  emailAttribute: z.string().max(300).default("mail"),
  nameAttribute: z.string().max(300).default("displayName"),
  groupsAttribute: z.string().max(300).default("groups"),
  /** Unsolicited responses (IdP-initiated sign-in) are refused unless this is on. */
  allowIdpInitiated: z.boolean().default(false),
  clockSkewSeconds: z.number().int().min(0).max(300).default(60),
});

/** IdP settings as validated. */
export type SamlConfig = z.infer<typeof samlConfigSchema>;

/** A certificate as a bare base64 body. */
export function normalizeCert(s: string): string {
  return s.replace(/-----BEGIN CERTIFICATE-----|-----END CERTIFICATE-----/g, "").replace(/\s+/g, "");
}

/** A refused SAML message: the stable reason (for the audit log) and a sentence. */
export class SamlRejection extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

const reject = (reason: string, message: string) => new SamlRejection(reason, message);

/** Parses XML with no DOCTYPE, entities, comments or processing instructions: refused before parsing. */
export function parseStrictXml(xml: string): Document {
  if (/<!DOCTYPE/i.test(xml) || /<!ENTITY/i.test(xml))
    throw reject("doctype", "The message contains a DOCTYPE, which is refused.");
  if (xml.includes("<!--"))
    throw reject("xml_comment", "The message contains XML comments, which are refused.");
  if (/<\?(?!xml[\s?])/i.test(xml))
    throw reject("malformed", "The message contains processing instructions.");
  let problem: string | undefined;
  const doc = new DOMParser({
    errorHandler: (level: string, msg: unknown) => {
      if (level !== "warning") problem ??= String(msg);
    },
  }).parseFromString(xml, "text/xml");
  if (problem || !doc?.documentElement) {
    // The parser's own text is internal (and echoes input back): only where it stopped is passed on.
    const at = /line:(\d+),col:(\d+)/.exec(problem ?? "");
    throw reject(
      "malformed",
      `This is not well-formed XML${at ? ` (the first error is at line ${at[1]}, column ${at[2]})` : ""}.`,
    );
  }
  return doc;
}

const elements = (node: Document | Element, ns: string, local: string): Element[] =>
  Array.from(node.getElementsByTagNameNS(ns, local));

const child = (el: Element, ns: string, local: string): Element | undefined =>
  Array.from(el.childNodes as NodeListOf<Node>).find(
    (n): n is Element =>
      n.nodeType === 1 && (n as Element).namespaceURI === ns && (n as Element).localName === local,
  );

const text = (el: Element | undefined) => (el?.textContent ?? "").trim();

/**
 * The shape every accepted Response has: one Assertion, a direct child of the Response; unique IDs;
 * each Signature a direct child of the Response or the Assertion, referencing exactly its parent.
 * Every XML signature wrapping variant moves, copies or nests one of these, so each is refused here.
 */
export function checkResponseShape(doc: Document): { response: Element; assertion: Element } {
  const response = doc.documentElement as Element;
  if (response.namespaceURI !== NS.protocol || response.localName !== "Response")
    throw reject("malformed", "The message is not a SAML Response.");
  if (elements(doc, NS.assertion, "EncryptedAssertion").length > 0)
    throw reject(
      "encrypted_unsupported",
      "Encrypted assertions are not supported; turn assertion encryption off at the IdP.",
    );
  const assertions = elements(doc, NS.assertion, "Assertion");
  if (assertions.length !== 1)
    throw reject(
      assertions.length === 0 ? "no_assertion" : "signature_wrapping",
      `The response has ${assertions.length} assertions; exactly one is accepted.`,
    );
  const assertion = assertions[0] as Element;
  if (assertion.parentNode !== response)
    throw reject("signature_wrapping", "The assertion is not where a SAML response keeps it.");
  const ids = new Set<string>();
  for (const el of Array.from(doc.getElementsByTagName("*")) as Element[]) {
    for (const name of ["ID", "Id", "id"]) {
      const v = el.getAttribute(name);
      if (!v) continue;
      if (ids.has(v)) throw reject("signature_wrapping", "Two elements carry the same ID.");
      ids.add(v);
    }
  }
  const signatures = elements(doc, NS.dsig, "Signature");
  if (signatures.length === 0) throw reject("unsigned", "The response is not signed.");
  for (const sig of signatures) {
    const parent = sig.parentNode as Element;
    if (parent !== response && parent !== assertion)
      throw reject("signature_wrapping", "A signature sits outside the response and the assertion.");
    const refs = elements(sig, NS.dsig, "Reference");
    const id = parent.getAttribute("ID");
    if (refs.length !== 1 || !id || refs[0]?.getAttribute("URI") !== `#${id}`)
      throw reject("signature_wrapping", "A signature does not cover exactly the element it belongs to.");
  }
  return { response, assertion };
}

/** What a checked response says about the person, and the ids needed for the request and replay checks. */
export interface SamlResult {
  nameId: string;
  nameIdFormat: string;
  attributes: Record<string, string[]>;
  assertionId: string;
  inResponseTo: string | null;
  /** Until when the assertion id must be remembered. */
  notOnOrAfter: Date;
  sessionIndex: string | null;
}

/** The service provider of one organization. */
export class ServiceProvider {
  readonly saml: SAML;

  constructor(
    readonly cfg: SamlConfig,
    readonly sp: { entityId: string; acsUrl: string; sloUrl: string },
    requestId?: string,
  ) {
    const options: NodeSamlConfig = {
      callbackUrl: sp.acsUrl,
      entryPoint: cfg.idpSsoUrl,
      issuer: sp.entityId,
      audience: sp.entityId,
      idpCert: cfg.idpCerts.map((c) => `-----BEGIN CERTIFICATE-----\n${c}\n-----END CERTIFICATE-----`),
      idpIssuer: cfg.idpEntityId,
      acceptedClockSkewMs: cfg.clockSkewSeconds * 1000,
      // InResponseTo is checked below against requests stored in PostgreSQL and bound to the browser.
      validateInResponseTo: "never" as NodeSamlConfig["validateInResponseTo"],
      // Either the response or the assertion must carry a valid signature (node-saml refuses neither).
      wantAssertionsSigned: false,
      wantAuthnResponseSigned: false,
      identifierFormat: null,
      disableRequestedAuthnContext: true,
      signatureAlgorithm: "sha256",
      generateUniqueId: () => requestId ?? `_${cryptoRandom()}`,
      logoutUrl: cfg.idpSloUrl || cfg.idpSsoUrl,
      logoutCallbackUrl: sp.sloUrl,
    };
    this.saml = new SAML(options);
  }

  /** The IdP URL that starts a sign-in with an AuthnRequest of the given id (HTTP-Redirect binding). */
  authorizeUrl(relayState: string): Promise<string> {
    return this.saml.getAuthorizeUrlAsync(relayState, undefined, {});
  }

  /** The IdP URL of a LogoutRequest for a session's NameID and SessionIndex (HTTP-Redirect binding). */
  logoutUrl(who: { nameId: string; nameIdFormat: string; sessionIndex: string | null }): Promise<string> {
    return this.saml.getLogoutUrlAsync(
      {
        issuer: this.cfg.idpEntityId,
        nameID: who.nameId,
        nameIDFormat: who.nameIdFormat,
        sessionIndex: who.sessionIndex ?? undefined,
      },
      "",
      {},
    );
  }

  /**
   * Checks a logout message that came by HTTP-Redirect: a LogoutResponse to our request, or a LogoutRequest
   * from the IdP, which must be signed with the IdP's key (an unsigned one would let any page sign people out).
   */
  async validateLogout(
    query: Record<string, string | string[] | undefined>,
    rawQuery: string,
  ): Promise<
    { kind: "response" } | { kind: "request"; nameId: string; sessionIndex: string | null; profile: Profile }
  > {
    const one = (k: string) => (typeof query[k] === "string" ? (query[k] as string) : undefined);
    const message = one("SAMLRequest") ?? one("SAMLResponse");
    if (!message || message.length > 100_000) throw reject("malformed", "No logout message.");
    let xml: string;
    try {
      xml = inflateRawSync(Buffer.from(message, "base64"), { maxOutputLength: 1_000_000 }).toString("utf8");
    } catch {
      throw reject("malformed", "The logout message is not deflated base64.");
    }
    const doc = parseStrictXml(xml);
    const issuer = text(elements(doc, NS.assertion, "Issuer")[0]);
    if (issuer !== this.cfg.idpEntityId)
      throw reject("wrong_issuer", "The logout message comes from another identity provider.");
    const isRequest = one("SAMLRequest") !== undefined;
    if (isRequest && !one("Signature"))
      throw reject("unsigned", "Logout requests from the identity provider must be signed.");
    const container: Record<string, string> = {};
    for (const k of ["SAMLRequest", "SAMLResponse", "RelayState", "SigAlg", "Signature"]) {
      const v = one(k);
      if (v !== undefined) container[k] = v;
    }
    let result: { profile: Profile | null };
    try {
      result = await this.saml.validateRedirectAsync(container, rawQuery);
    } catch (err) {
      throw classifyNodeSaml(err);
    }
    if (!isRequest) return { kind: "response" };
    const profile = result.profile;
    if (!profile?.nameID) throw reject("no_subject", "The logout request names nobody.");
    return { kind: "request", nameId: profile.nameID, sessionIndex: profile.sessionIndex ?? null, profile };
  }

  /** The IdP URL that answers its LogoutRequest (success). */
  logoutResponseUrl(profile: Profile): Promise<string> {
    return this.saml.getLogoutResponseUrlAsync(profile, "", {}, true);
  }

  /** Every check of a POSTed SAMLResponse except the stored request and replay lookups, which need the database. */
  async validate(samlResponse: string): Promise<SamlResult> {
    if (samlResponse.length > 700_000) throw reject("too_large", "The SAML response is too large.");
    if (!/^[A-Za-z0-9+/=\s]+$/.test(samlResponse))
      throw reject("malformed", "The SAML response is not base64.");
    const xml = Buffer.from(samlResponse, "base64").toString("utf8");
    const doc = parseStrictXml(xml);
    const { response } = checkResponseShape(doc);

    const status = child(child(response, NS.protocol, "Status") as Element, NS.protocol, "StatusCode");
    if (!status || status.getAttribute("Value") !== SUCCESS)
      throw reject(
        "status_not_success",
        `The identity provider answered ${status?.getAttribute("Value") ?? "no status"}.`,
      );
    const destination = response.getAttribute("Destination");
    if (destination && destination !== this.sp.acsUrl)
      throw reject("wrong_destination", "The response was sent to another address than this service's.");
    const responseIssuer = text(child(response, NS.assertion, "Issuer"));
    if (responseIssuer && responseIssuer !== this.cfg.idpEntityId)
      throw reject("wrong_issuer", "The response comes from another identity provider.");

    let profile: Profile | null;
    try {
      ({ profile } = await this.saml.validatePostResponseAsync({ SAMLResponse: samlResponse }));
    } catch (err) {
      throw classifyNodeSaml(err);
    }
    if (!profile) throw reject("no_assertion", "The response carries no sign-in.");
    // Everything below reads the assertion node-saml verified (its signed bytes), never the raw document.
    const signed = parseStrictXml((profile.getAssertionXml as () => string)());
    const assertion = signed.documentElement as Element;
    if (assertion.localName !== "Assertion" || assertion.namespaceURI !== NS.assertion)
      throw reject("malformed", "The signed content is not an assertion.");
    if (text(child(assertion, NS.assertion, "Issuer")) !== this.cfg.idpEntityId)
      throw reject("wrong_issuer", "The assertion comes from another identity provider.");
    const subject = child(assertion, NS.assertion, "Subject");
    const nameIdEl = subject ? child(subject, NS.assertion, "NameID") : undefined;
    const nameId = text(nameIdEl);
    if (!nameId) throw reject("no_subject", "The assertion names nobody.");
    if (nameIdEl && Array.from(nameIdEl.childNodes as NodeListOf<Node>).some((n) => n.nodeType !== 3))
      throw reject("malformed", "The NameID is not plain text.");
    const now = Date.now();
    const skew = this.cfg.clockSkewSeconds * 1000;
    const confirmations = subject
      ? Array.from(subject.childNodes as NodeListOf<Node>).filter(
          (n): n is Element => n.nodeType === 1 && (n as Element).localName === "SubjectConfirmation",
        )
      : [];
    const bearer = confirmations.filter((c) => c.getAttribute("Method") === BEARER);
    if (bearer.length === 0)
      throw reject("no_bearer_confirmation", "The assertion has no bearer subject confirmation.");
    const data = bearer
      .map((c) => child(c, NS.assertion, "SubjectConfirmationData"))
      .find((d): d is Element => !!d && d.getAttribute("Recipient") === this.sp.acsUrl);
    if (!data) throw reject("wrong_recipient", "The assertion was issued for another service address.");
    const until = Date.parse(data.getAttribute("NotOnOrAfter") ?? "");
    if (!Number.isFinite(until)) throw reject("no_expiry", "The subject confirmation has no NotOnOrAfter.");
    if (now - skew >= until) throw reject("expired", "The sign-in response has expired.");
    const notBefore = Date.parse(data.getAttribute("NotBefore") ?? "");
    if (Number.isFinite(notBefore) && now + skew < notBefore)
      throw reject("not_yet_valid", "The sign-in response is not valid yet.");
    const responseIrt = response.getAttribute("InResponseTo") || null;
    const dataIrt = data.getAttribute("InResponseTo") || null;
    if (responseIrt && dataIrt && responseIrt !== dataIrt)
      throw reject("in_response_to_mismatch", "The response and the assertion answer different requests.");
    const inResponseTo = dataIrt ?? responseIrt;
    const assertionId = assertion.getAttribute("ID") ?? "";
    if (!assertionId) throw reject("malformed", "The assertion has no ID.");
    const conditions = child(assertion, NS.assertion, "Conditions");
    const condUntil = Date.parse(conditions?.getAttribute("NotOnOrAfter") ?? "");
    const attributes: Record<string, string[]> = {};
    for (const a of elements(assertion, NS.assertion, "Attribute")) {
      const name = a.getAttribute("Name") ?? "";
      const values = elements(a, NS.assertion, "AttributeValue").map((v) => text(v));
      attributes[name] = [...(attributes[name] ?? []), ...values];
      const friendly = a.getAttribute("FriendlyName");
      if (friendly && friendly !== name) attributes[friendly] = [...(attributes[friendly] ?? []), ...values];
    }
    const authn = child(assertion, NS.assertion, "AuthnStatement");
    return {
      nameId,
      nameIdFormat: nameIdEl?.getAttribute("Format") ?? "",
      attributes,
      assertionId,
      inResponseTo,
      notOnOrAfter: new Date(Math.max(until, Number.isFinite(condUntil) ? condUntil : 0) + skew),
      sessionIndex: authn?.getAttribute("SessionIndex") ?? null,
    };
  }
}

function cryptoRandom(): string {
  return Buffer.from(globalThis.crypto.getRandomValues(new Uint8Array(20))).toString("hex");
}

function classifyNodeSaml(err: unknown): SamlRejection {
  const msg = err instanceof Error ? err.message : String(err);
  if (/signature/i.test(msg))
    return reject(
      "bad_signature",
      "The response's signature is not valid for the configured IdP certificate.",
    );
  if (/audience/i.test(msg)) return reject("wrong_audience", "The assertion is meant for another service.");
  if (/expired|NotOnOrAfter/i.test(msg)) return reject("expired", "The sign-in response has expired.");
  if (/NotBefore|not yet valid/i.test(msg))
    return reject("not_yet_valid", "The sign-in response is not valid yet.");
  if (/issuer/i.test(msg))
    return reject("wrong_issuer", "The response comes from another identity provider.");
  if (/status|Responder|Requester/i.test(msg)) return reject("status_not_success", msg.slice(0, 200));
  return reject("invalid_response", `The sign-in response was refused: ${msg.slice(0, 200)}`);
}

/** Reads an IdP's metadata: entity id, SSO and SLO URLs and signing certificates. DOCTYPEs are refused. */
export function parseIdpMetadata(
  xml: string,
): Pick<SamlConfig, "idpEntityId" | "idpSsoUrl" | "idpSloUrl" | "idpCerts"> {
  if (xml.length > 1_000_000) throw reject("too_large", "The metadata is too large.");
  const doc = parseStrictXml(xml.replace(/^\uFEFF/, ""));
  const entity =
    doc.documentElement?.localName === "EntityDescriptor"
      ? (doc.documentElement as Element)
      : elements(doc, NS.metadata, "EntityDescriptor").find(
          (e) => elements(e, NS.metadata, "IDPSSODescriptor").length > 0,
        );
  const idp = entity ? elements(entity, NS.metadata, "IDPSSODescriptor")[0] : undefined;
  if (!entity || !idp)
    throw reject("not_idp_metadata", "This is not the metadata of a SAML identity provider.");
  const location = (tag: string, binding: string) =>
    elements(idp, NS.metadata, tag)
      .find((s) => s.getAttribute("Binding") === binding)
      ?.getAttribute("Location") ?? "";
  const sso =
    location("SingleSignOnService", REDIRECT_BINDING) || location("SingleSignOnService", POST_BINDING);
  if (!sso)
    throw reject(
      "not_idp_metadata",
      "The metadata names no single sign-on URL with the HTTP-Redirect binding.",
    );
  const certs = elements(idp, NS.metadata, "KeyDescriptor")
    .filter((k) => !k.getAttribute("use") || k.getAttribute("use") === "signing")
    .flatMap((k) => elements(k, NS.dsig, "X509Certificate").map((c) => normalizeCert(text(c))));
  if (certs.length === 0) throw reject("not_idp_metadata", "The metadata has no signing certificate.");
  return {
    idpEntityId: entity.getAttribute("entityID") ?? "",
    idpSsoUrl: sso,
    idpSloUrl: location("SingleLogoutService", REDIRECT_BINDING),
    idpCerts: [...new Set(certs)].slice(0, 4),
  };
}

/** The SP metadata an IdP admin imports: entity id and the POST-binding assertion consumer service. */
export function serviceProviderMetadata(sp: { entityId: string; acsUrl: string; sloUrl: string }): string {
  const a = escapeMarkup;
  return `<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="${NS.metadata}" entityID="${a(sp.entityId)}">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" protocolSupportEnumeration="${NS.protocol}">
    <md:SingleLogoutService Binding="${REDIRECT_BINDING}" Location="${a(sp.sloUrl)}"/>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>
    <md:AssertionConsumerService index="0" isDefault="true" Binding="${POST_BINDING}" Location="${a(sp.acsUrl)}"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
`;
}

/** Escapes text for XML or HTML content and attribute values. */
export const escapeMarkup = (v: string) =>
  v.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] as string,
  );
