// SAML responses made and signed here (xml-crypto), and the known ways attackers alter a valid one.
import { randomBytes } from "node:crypto";
import { inflateRawSync } from "node:zlib";
import { DOMParser, XMLSerializer } from "@xmldom/xmldom";
import { SignedXml } from "xml-crypto";

const P = "urn:oasis:names:tc:SAML:2.0:protocol";
const A = "urn:oasis:names:tc:SAML:2.0:assertion";
const DS = "http://www.w3.org/2000/09/xmldsig#";

/** Everything a forged response says; each field can be made wrong for a negative test. */
export interface ResponseSpec {
  issuer: string;
  acsUrl: string;
  destination?: string;
  recipient?: string;
  audience: string;
  inResponseTo?: string;
  nameId: string;
  attributes?: Record<string, string[]>;
  notBefore?: Date;
  notOnOrAfter?: Date;
  status?: string;
  confirmationMethod?: string | null;
  assertionIssuer?: string;
}

const iso = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, "Z");
const esc = (v: string) => v.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;");
const newId = () => `_${randomBytes(16).toString("hex")}`;

/** The XML of an unsigned Response with one Assertion. */
export function responseXml(spec: ResponseSpec): string {
  const now = new Date();
  const nb = spec.notBefore ?? new Date(now.getTime() - 60_000);
  const noa = spec.notOnOrAfter ?? new Date(now.getTime() + 5 * 60_000);
  const irt = spec.inResponseTo ? ` InResponseTo="${esc(spec.inResponseTo)}"` : "";
  const attrs = Object.entries(spec.attributes ?? {})
    .map(
      ([k, vs]) =>
        `<saml:Attribute Name="${esc(k)}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">${vs
          .map((v) => `<saml:AttributeValue xsi:type="xs:string">${esc(v)}</saml:AttributeValue>`)
          .join("")}</saml:Attribute>`,
    )
    .join("");
  const method =
    spec.confirmationMethod === undefined ? "urn:oasis:names:tc:SAML:2.0:cm:bearer" : spec.confirmationMethod;
  const confirmation =
    method === null
      ? ""
      : `<saml:SubjectConfirmation Method="${esc(method)}"><saml:SubjectConfirmationData NotOnOrAfter="${iso(noa)}" Recipient="${esc(spec.recipient ?? spec.acsUrl)}"${irt}/></saml:SubjectConfirmation>`;
  return (
    `<samlp:Response xmlns:samlp="${P}" xmlns:saml="${A}" ID="${newId()}" Version="2.0" IssueInstant="${iso(now)}" Destination="${esc(spec.destination ?? spec.acsUrl)}"${irt}>` +
    `<saml:Issuer>${esc(spec.issuer)}</saml:Issuer>` +
    `<samlp:Status><samlp:StatusCode Value="${esc(spec.status ?? "urn:oasis:names:tc:SAML:2.0:status:Success")}"/></samlp:Status>` +
    `<saml:Assertion xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="http://www.w3.org/2001/XMLSchema" ID="${newId()}" Version="2.0" IssueInstant="${iso(now)}">` +
    `<saml:Issuer>${esc(spec.assertionIssuer ?? spec.issuer)}</saml:Issuer>` +
    `<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">${esc(spec.nameId)}</saml:NameID>${confirmation}</saml:Subject>` +
    `<saml:Conditions NotBefore="${iso(nb)}" NotOnOrAfter="${iso(noa)}"><saml:AudienceRestriction><saml:Audience>${esc(spec.audience)}</saml:Audience></saml:AudienceRestriction></saml:Conditions>` +
    `<saml:AuthnStatement AuthnInstant="${iso(now)}" SessionIndex="${newId()}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>` +
    `<saml:AttributeStatement>${attrs}</saml:AttributeStatement>` +
    `</saml:Assertion></samlp:Response>`
  );
}

/** Signs the Assertion (and with `response`, then the whole Response) with the key: enveloped, exc-c14n, RSA-SHA256. */
export function sign(
  xml: string,
  key: string,
  opts: { assertion?: boolean; response?: boolean } = { assertion: true },
): string {
  const make = () =>
    new SignedXml({
      privateKey: key,
      signatureAlgorithm: "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
      canonicalizationAlgorithm: "http://www.w3.org/2001/10/xml-exc-c14n#",
    });
  const transforms = [
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
  ];
  let out = xml;
  if (opts.assertion !== false) {
    const s = make();
    s.addReference({
      xpath: "//*[local-name(.)='Assertion']",
      digestAlgorithm: "http://www.w3.org/2001/04/xmlenc#sha256",
      transforms,
    });
    s.computeSignature(out, {
      prefix: "ds",
      location: { reference: "//*[local-name(.)='Assertion']/*[local-name(.)='Issuer']", action: "after" },
    });
    out = s.getSignedXml();
  }
  if (opts.response) {
    const s = make();
    s.addReference({
      xpath: "/*[local-name(.)='Response']",
      digestAlgorithm: "http://www.w3.org/2001/04/xmlenc#sha256",
      transforms,
    });
    s.computeSignature(out, {
      prefix: "ds",
      location: { reference: "/*[local-name(.)='Response']/*[local-name(.)='Issuer']", action: "after" },
    });
    out = s.getSignedXml();
  }
  return out;
}

const parse = (xml: string) => new DOMParser().parseFromString(xml, "text/xml");
const serialize = (doc: Document) => new XMLSerializer().serializeToString(doc);
const first = (doc: Document | Element, ns: string, local: string) =>
  doc.getElementsByTagNameNS(ns, local)[0] as Element;
const directChild = (el: Element, ns: string, local: string) =>
  Array.from(el.childNodes as NodeListOf<Node>).find(
    (n): n is Element =>
      n.nodeType === 1 && (n as Element).namespaceURI === ns && (n as Element).localName === local,
  );

/** A copy of an assertion naming someone else, without its signature: what every wrapping attack smuggles in. */
function evilAssertion(doc: Document, assertion: Element, who: string, keepId = false): Element {
  const evil = assertion.cloneNode(true) as Element;
  const sig = directChild(evil, DS, "Signature");
  if (sig) evil.removeChild(sig);
  if (!keepId) evil.setAttribute("ID", newId());
  const nameId = first(evil, A, "NameID");
  while (nameId.firstChild) nameId.removeChild(nameId.firstChild);
  nameId.appendChild(doc.createTextNode(who));
  return evil;
}

/** The eight XML signature wrapping shapes (after SAML Raider's XSW1-XSW8), applied to a signed response. */
export function wrap(signedXml: string, variant: number, who: string): string {
  const doc = parse(signedXml);
  const response = doc.documentElement as Element;
  const assertion = first(doc, A, "Assertion");
  const aSig = directChild(assertion, DS, "Signature") as Element;
  const rSig = directChild(response, DS, "Signature");
  switch (variant) {
    case 1: {
      // Response signature: a copy of the signed Response inside the Signature; the outer one altered.
      const copy = response.cloneNode(true) as Element;
      const copySig = directChild(copy, DS, "Signature");
      if (copySig) copy.removeChild(copySig);
      (rSig as Element).appendChild(copy);
      response.setAttribute("ID", newId());
      response.replaceChild(evilAssertion(doc, assertion, who), assertion);
      break;
    }
    case 2: {
      // As 1, with the copy next to a detached signature.
      const copy = response.cloneNode(true) as Element;
      const copySig = directChild(copy, DS, "Signature");
      if (copySig) copy.removeChild(copySig);
      response.insertBefore(copy, rSig as Element);
      response.setAttribute("ID", newId());
      response.replaceChild(evilAssertion(doc, assertion, who), assertion);
      break;
    }
    case 3:
      // An unsigned evil assertion before the signed one.
      response.insertBefore(evilAssertion(doc, assertion, who), assertion);
      break;
    case 4: {
      // The signed assertion nested inside the evil one.
      const evil = evilAssertion(doc, assertion, who);
      response.replaceChild(evil, assertion);
      evil.appendChild(assertion);
      break;
    }
    case 5: {
      // The signature moved to an altered assertion; an unsigned copy of the original appended.
      const copy = evilAssertion(doc, assertion, first(assertion, A, "NameID").textContent ?? "", true);
      const nameId = first(assertion, A, "NameID");
      nameId.replaceChild(doc.createTextNode(who), nameId.firstChild as Node);
      assertion.setAttribute("ID", newId());
      response.appendChild(copy);
      break;
    }
    case 6: {
      // Altered assertion keeps the signature; the original (unsigned) inside the signature's Object.
      const copy = evilAssertion(doc, assertion, first(assertion, A, "NameID").textContent ?? "", true);
      const object = doc.createElementNS(DS, "ds:Object");
      object.appendChild(copy);
      aSig.appendChild(object);
      const nameId = first(assertion, A, "NameID");
      nameId.replaceChild(doc.createTextNode(who), nameId.firstChild as Node);
      assertion.setAttribute("ID", newId());
      break;
    }
    case 7: {
      // The signed assertion hidden in an Extensions element; the evil one where the SP looks.
      const ext = doc.createElementNS(P, "samlp:Extensions");
      response.replaceChild(evilAssertion(doc, assertion, who), assertion);
      ext.appendChild(assertion);
      response.insertBefore(ext, directChild(response, P, "Status") as Element);
      break;
    }
    case 8: {
      // The evil assertion carries the signature, whose Object holds the original without it.
      const evil = evilAssertion(doc, assertion, who, true);
      const object = doc.createElementNS(DS, "ds:Object");
      assertion.removeChild(aSig);
      object.appendChild(assertion.cloneNode(true));
      aSig.appendChild(object);
      const issuer = first(evil, A, "Issuer");
      evil.insertBefore(aSig, issuer.nextSibling);
      response.replaceChild(evil, assertion);
      break;
    }
    default:
      throw new Error(`no XSW${variant}`);
  }
  return serialize(doc);
}

/** Removes every signature. */
export function stripSignatures(xml: string): string {
  const doc = parse(xml);
  for (const s of Array.from(doc.getElementsByTagNameNS(DS, "Signature"))) s.parentNode?.removeChild(s);
  return serialize(doc);
}

/** The ID of the AuthnRequest inside an HTTP-Redirect binding URL. */
export function requestIdOf(redirectUrl: string): string {
  const req = new URL(redirectUrl).searchParams.get("SAMLRequest") ?? "";
  const xml = inflateRawSync(Buffer.from(req, "base64")).toString("utf8");
  const m = /\sID="([^"]+)"/.exec(xml);
  if (!m?.[1]) throw new Error(`no ID in ${xml}`);
  return m[1];
}

/** base64 of an XML text, as the POST binding sends it. */
export const b64 = (xml: string) => Buffer.from(xml, "utf8").toString("base64");
