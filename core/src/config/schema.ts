import { z } from "zod";

/** Marks a setting as secret: redacted in `config print` and logs, and settable through `*_FILE`. */
const secret = <T extends z.ZodType>(schema: T, description: string) =>
  schema.meta({ secret: true, description });

const port = z.coerce.number().int().min(0).max(65535);
const bool = z
  .union([z.boolean(), z.enum(["true", "false", "1", "0"])])
  .transform((v) => v === true || v === "true" || v === "1");

/** Every setting of WorkSynapse. The docs' configuration table is generated from this schema. */
export const configSchema = z.object({
  env: z
    .enum(["development", "production", "test"])
    .default("production")
    .describe("Run mode; development enables pretty logs. Env: NODE_ENV also sets it."),
  dataDir: z
    .string()
    .min(1)
    .default("./data")
    .describe("Directory for everything local: embedded database, bus storage, files, models, secrets."),
  roles: z
    .array(z.enum(["web", "worker", "inference"]))
    .min(1)
    .default(["web", "worker"])
    .describe(
      "Which roles this process runs (comma-separated in env or --roles): web (HTTP), worker (background jobs), inference (serves its models to the others over the bus; see docs/scaling.md).",
    ),
  shutdownDeadlineMs: z.coerce
    .number()
    .int()
    .min(1000)
    .default(30_000)
    .describe(
      "SIGTERM ends the process within this time whatever the bus and database do; past it, or when a shutdown step failed, it exits 1 (abandoned jobs are redelivered).",
    ),
  http: z
    .object({
      host: z.string().default("0.0.0.0").describe("Address the HTTP server binds to."),
      port: port.default(8080).describe("HTTP port for the UI and API."),
      bodyLimit: z.string().default("1mb").describe("Largest JSON or form body accepted."),
      trustProxy: bool
        .default(false)
        .describe(
          "Behind a reverse proxy: take the client address and scheme from X-Forwarded-For and X-Forwarded-Proto, as the trusted proxies set them.",
        ),
      proxyHops: z.coerce
        .number()
        .int()
        .min(1)
        .max(10)
        .default(1)
        .describe(
          "How many reverse proxies stand in front of the server (with trustProxy): the client address is the X-Forwarded-For entry that many places from the right.",
        ),
      trustedProxies: z
        .array(z.string().min(1))
        .default([])
        .describe(
          "Addresses or networks of the trusted reverse proxies (e.g. 10.0.0.0/8, loopback); when set, it replaces proxyHops: X-Forwarded-For is followed from the right only through these.",
        ),
      shutdownTimeoutMs: z.coerce
        .number()
        .int()
        .positive()
        .default(15000)
        .describe("How long graceful shutdown waits for in-flight work."),
      uiDir: z
        .string()
        .optional()
        .describe("Directory of the built web UI; defaults to the bundled ui/build."),
      tls: z
        .object({
          certPath: z
            .string()
            .optional()
            .describe(
              "PEM certificate chain of the built-in HTTPS server (with keyPath). Unset: plain HTTP, for a TLS reverse proxy or ingress in front. SIGHUP reloads both files.",
            ),
          keyPath: z.string().optional().describe("PEM private key of the built-in HTTPS server."),
          minVersion: z
            .enum(["TLSv1.2", "TLSv1.3"])
            .default("TLSv1.2")
            .describe("Oldest TLS version the built-in server accepts."),
        })
        .refine((t) => !t.certPath === !t.keyPath, "set both certPath and keyPath, or neither")
        .default({ minVersion: "TLSv1.2" }),
    })
    .default({
      host: "0.0.0.0",
      port: 8080,
      bodyLimit: "1mb",
      trustProxy: false,
      proxyHops: 1,
      trustedProxies: [],
      shutdownTimeoutMs: 15000,
      tls: { minVersion: "TLSv1.2" },
    }),
  log: z
    .object({
      level: z
        .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
        .default("info")
        .describe("Log level."),
      pretty: bool.optional().describe("Human-readable logs; defaults to on in development only."),
    })
    .default({ level: "info" }),
  database: z
    .object({
      url: secret(
        z.string().optional(),
        "PostgreSQL URL the server uses (the application role). Unset: embedded PGlite in the data directory. Env: DATABASE_URL.",
      ),
      ownerUrl: secret(
        z.string().optional(),
        "PostgreSQL URL of the owner role that runs migrations; defaults to database.url. Env: DATABASE_OWNER_URL.",
      ),
      appRole: z
        .string()
        .regex(/^[a-z_][a-z0-9_]*$/)
        .default("worksynapse_app")
        .describe("Database role the server runs as; owns nothing, cannot bypass row-level security."),
      poolMax: z.coerce.number().int().min(1).default(10).describe("Largest PostgreSQL connection pool."),
      migrateOnStart: bool
        .default(true)
        .describe(
          "Apply pending migrations at start (as the owner role); off when migrations are run by the installer.",
        ),
    })
    .default({ appRole: "worksynapse_app", poolMax: 10, migrateOnStart: true }),
  nats: z
    .object({
      url: z
        .string()
        .optional()
        .describe("External NATS server URL. Unset: a local nats-server is started. Env: NATS_URL."),
      serverBin: z
        .string()
        .optional()
        .describe("Path of the nats-server binary for the local bus. Env: NATS_SERVER_BIN."),
      localPort: port
        .default(0)
        .describe(
          "Loopback port of the local nats-server (0: any free port, kept across its restarts); fixed, a worker process on the same machine can use it as NATS_URL.",
        ),
      prefix: z
        .string()
        .regex(/^[A-Za-z0-9_-]+$/)
        .default("ws")
        .describe("Prefix of every stream and subject, so installations can share one NATS."),
      token: secret(z.string().optional(), "Token for an external NATS server."),
    })
    .default({ prefix: "ws", localPort: 0 }),
  auth: z
    .object({
      publicUrl: z
        .string()
        .url()
        .optional()
        .describe(
          "Origin users reach the server at (e.g. https://ai.hospital.internal); default: the request's Host.",
        ),
      sessionIdleMinutes: z.coerce.number().int().min(1).default(15).describe("Session idle timeout."),
      sessionAbsoluteHours: z.coerce.number().int().min(1).default(12).describe("Session absolute lifetime."),
      lockoutThreshold: z.coerce
        .number()
        .int()
        .min(1)
        .default(5)
        .describe("Failed sign-ins on one account before it locks."),
      lockoutMinutes: z.coerce
        .number()
        .int()
        .min(1)
        .default(15)
        .describe("Window for counting failures, and how long a lock lasts."),
      signInPerIpPerMinute: z.coerce
        .number()
        .int()
        .min(1)
        .default(30)
        .describe("Sign-in attempts per client address per minute."),
      apiPerMinute: z.coerce
        .number()
        .int()
        .min(1)
        .default(1200)
        .describe("API requests per user or key per minute."),
      accessTokenMinutes: z.coerce
        .number()
        .int()
        .min(1)
        .max(60)
        .default(15)
        .describe("Lifetime of JWT access tokens."),
    })
    .default({
      sessionIdleMinutes: 15,
      sessionAbsoluteHours: 12,
      lockoutThreshold: 5,
      lockoutMinutes: 15,
      signInPerIpPerMinute: 30,
      apiPerMinute: 1200,
      accessTokenMinutes: 15,
    }),
  ai: z
    .object({
      threads: z.coerce
        .number()
        .int()
        .min(1)
        .optional()
        .describe(
          "CPU threads per inference; default 1 on 2 cores or fewer, else half the cores (spinning threads hurt a busy core).",
        ),
      parallel: z.coerce
        .number()
        .int()
        .min(1)
        .max(64)
        .default(4)
        .describe("Requests generated at once per model (context sequences, batched)."),
      contexts: z.coerce
        .number()
        .int()
        .min(1)
        .max(64)
        .optional()
        .describe(
          "Contexts per model the sequences are spread over; each decodes on its own thread, its sequences batched. Default: 1 with a GPU; on CPU with 1 thread one per sequence (up to the libuv pool size less 2), else cores / threads.",
        ),
      contextSize: z.coerce
        .number()
        .int()
        .min(128)
        .default(2048)
        .describe("Context tokens per sequence (capped by the model's training context)."),
      maxQueue: z.coerce
        .number()
        .int()
        .min(0)
        .default(64)
        .describe("Requests waiting for a sequence before new ones get 503."),
      requestTimeoutMs: z.coerce
        .number()
        .int()
        .min(1000)
        .default(120000)
        .describe("Longest a generation may run."),
      maxTokens: z.coerce
        .number()
        .int()
        .min(1)
        .default(512)
        .describe("Default cap on generated tokens per request."),
      idleUnloadMinutes: z.coerce
        .number()
        .int()
        .min(1)
        .default(30)
        .describe("Unload a model unused this long."),
      gpu: z
        .enum(["auto", "off"])
        .default("auto")
        .describe("Use a GPU when llama.cpp finds one (auto) or never (off)."),
      remote: bool
        .default(false)
        .describe(
          "Use the inference nodes (processes with the inference role) over the bus instead of loading models in this process.",
        ),
      importDir: z
        .string()
        .optional()
        .describe(
          "The server's import folder: model packs an admin copies here can be imported from the Models page (default: <dataDir>/import).",
        ),
      packKeys: z
        .array(
          z.string().regex(/^[A-Za-z0-9+/]{56}$/, "a minisign public key (the base64 line of minisign.pub)"),
        )
        .default([])
        .describe(
          "minisign public keys (the base64 line of minisign.pub) whose signed model packs may be imported.",
        ),
    })
    .default({
      parallel: 4,
      contextSize: 2048,
      maxQueue: 64,
      requestTimeoutMs: 120000,
      maxTokens: 512,
      idleUnloadMinutes: 30,
      gpu: "auto",
      remote: false,
      packKeys: [],
    }),
  assistant: z
    .object({
      maxSteps: z.coerce
        .number()
        .int()
        .min(1)
        .max(50)
        .default(6)
        .describe("Steps (model decisions) one assistant run may take; the last one can only answer."),
      maxRunTokens: z.coerce
        .number()
        .int()
        .min(100)
        .default(20000)
        .describe("Prompt and completion tokens one assistant run may use before it is stopped."),
      maxRunMs: z.coerce
        .number()
        .int()
        .min(1000)
        .default(180000)
        .describe("Wall time one assistant run may take (not counting waits for approval)."),
      stepTokens: z.coerce
        .number()
        .int()
        .min(128)
        .default(512)
        .describe("Largest tool decision (arguments) the model may write in one step, in tokens."),
      answerTokens: z.coerce
        .number()
        .int()
        .min(16)
        .default(1024)
        .describe("Largest answer the model may write, in tokens."),
      approvalTtlMinutes: z.coerce
        .number()
        .int()
        .min(1)
        .default(15)
        .describe("How long a pending action waits for the user's approval before it expires."),
    })
    .default({
      maxSteps: 6,
      maxRunTokens: 20000,
      maxRunMs: 180000,
      stepTokens: 512,
      answerTokens: 1024,
      approvalTtlMinutes: 15,
    }),
  chat: z
    .object({
      dir: z
        .string()
        .optional()
        .describe(
          "Where files shared in chat live (default: <dataDir>/chat). Several nodes: a shared volume.",
        ),
      maxFileBytes: z.coerce
        .number()
        .int()
        .min(1)
        .default(25 * 1024 * 1024)
        .describe("Largest file shared in a chat message."),
      maxFilesPerMessage: z.coerce.number().int().min(1).default(10).describe("Files in one chat message."),
    })
    .default({ maxFileBytes: 25 * 1024 * 1024, maxFilesPerMessage: 10 }),
  projects: z
    .object({
      dir: z
        .string()
        .optional()
        .describe(
          "Where task attachments live (default: <dataDir>/projects). Several nodes: a shared volume.",
        ),
      maxFileBytes: z.coerce
        .number()
        .int()
        .min(1)
        .default(25 * 1024 * 1024)
        .describe("Largest file attached to a task."),
      maxFilesPerUpload: z.coerce
        .number()
        .int()
        .min(1)
        .default(10)
        .describe("Files in one attachment upload."),
      reminderLeadHours: z.coerce
        .number()
        .int()
        .min(1)
        .max(720)
        .default(24)
        .describe("How long before a task's due time its assignees get the due-soon reminder."),
      reminderIntervalMs: z.coerce
        .number()
        .int()
        .min(100)
        .default(30_000)
        .describe("How often a worker looks for reminders that are due."),
      aiTokens: z.coerce
        .number()
        .int()
        .min(256)
        .default(4096)
        .describe("Most tokens a goal breakdown or weekly summary may generate."),
    })
    .default({
      maxFileBytes: 25 * 1024 * 1024,
      maxFilesPerUpload: 10,
      reminderLeadHours: 24,
      reminderIntervalMs: 30_000,
      aiTokens: 4096,
    }),
  kb: z
    .object({
      dir: z
        .string()
        .optional()
        .describe(
          "Where uploaded documents and the LanceDB index live (default: <dataDir>/kb). Several nodes: a shared volume.",
        ),
      maxFileBytes: z.coerce
        .number()
        .int()
        .min(1)
        .default(50 * 1024 * 1024)
        .describe("Largest document accepted."),
      maxUploadBytes: z.coerce
        .number()
        .int()
        .min(1)
        .default(200 * 1024 * 1024)
        .describe("Largest upload request (all its files together)."),
      maxFilesPerUpload: z.coerce.number().int().min(1).default(20).describe("Files in one upload request."),
      parseTimeoutMs: z.coerce
        .number()
        .int()
        .min(500)
        .default(60000)
        .describe("Wall-clock limit of parsing one document (the parser process is killed after it)."),
      parseMemoryMb: z.coerce
        .number()
        .int()
        .min(128)
        .default(512)
        .describe(
          "Memory limit of the parser process, all of it (resident set, not only the JavaScript heap): past it the process is killed and the document fails.",
        ),
      maxPages: z.coerce.number().int().min(1).default(5000).describe("Most pages of a PDF that is read."),
      maxTextChars: z.coerce
        .number()
        .int()
        .min(1000)
        .default(20_000_000)
        .describe("Most text, in characters, one document may yield."),
      zipMaxEntries: z.coerce
        .number()
        .int()
        .min(1)
        .default(2000)
        .describe("Most entries a DOCX (zip) may hold."),
      zipMaxBytes: z.coerce
        .number()
        .int()
        .min(1)
        .default(100 * 1024 * 1024)
        .describe("Largest total uncompressed size of a DOCX's entries."),
      chunkTokens: z.coerce
        .number()
        .int()
        .min(50)
        .default(500)
        .describe("Target size of a chunk, in tokens (about 4 characters each)."),
      chunkOverlap: z.coerce.number().int().min(0).default(60).describe("Tokens repeated between chunks."),
      stallAfterMs: z.coerce
        .number()
        .int()
        .min(1000)
        .default(30 * 60_000)
        .describe(
          "A document with no indexing progress for this long is queued again (twice), then failed with a reason.",
        ),
    })
    .default({
      maxFileBytes: 50 * 1024 * 1024,
      maxUploadBytes: 200 * 1024 * 1024,
      maxFilesPerUpload: 20,
      parseTimeoutMs: 60000,
      parseMemoryMb: 512,
      maxPages: 5000,
      maxTextChars: 20_000_000,
      zipMaxEntries: 2000,
      zipMaxBytes: 100 * 1024 * 1024,
      chunkTokens: 500,
      chunkOverlap: 60,
      stallAfterMs: 30 * 60_000,
    }),
  metrics: z
    .object({
      token: secret(
        z.string().min(16).optional(),
        "Bearer token Prometheus must send to read /metrics (its bearer_token_file). Unset: /metrics refuses every request.",
      ),
    })
    .default({}),
  audit: z
    .object({
      checkpointIntervalMs: z.coerce
        .number()
        .int()
        .min(1000)
        .default(60_000)
        .describe(
          "How often the worker writes a signed checkpoint of each audit chain's head outside the database.",
        ),
      sink: z
        .string()
        .optional()
        .describe(
          "Where checkpoints are also sent, for a SIEM: a file path (JSON lines appended), or syslog://host:port (RFC 5424 over UDP) or syslog+tcp://host:port.",
        ),
    })
    .default({ checkpointIntervalMs: 60_000 }),
  integrations: z
    .object({
      egress: bool
        .default(true)
        .describe(
          "Whether integrations may call out at all. false: every outbound call is refused (webhooks still come in).",
        ),
      allowLoopback: bool
        .default(false)
        .describe(
          "Whether a connection may reach a loopback address (an integration on the same host; tests).",
        ),
      pluginsDir: z
        .string()
        .optional()
        .describe("Where plugins are loaded from (default: the bundle's plugins/ folder)."),
      ratePerSecond: z.coerce
        .number()
        .min(0.1)
        .default(10)
        .describe("Outbound calls per second per connection at most (a token bucket)."),
      timeoutMs: z.coerce
        .number()
        .int()
        .min(100)
        .default(15_000)
        .describe("Longest outbound call, retries included."),
      webhookBodyBytes: z.coerce
        .number()
        .int()
        .min(1024)
        .default(1024 * 1024)
        .describe("Largest inbound webhook body."),
      webhookToleranceSeconds: z.coerce
        .number()
        .int()
        .min(10)
        .default(300)
        .describe("How old a signed webhook's timestamp may be (generic and Slack schemes)."),
      retentionDays: z.coerce
        .number()
        .int()
        .min(1)
        .default(30)
        .describe("How long processed webhook deliveries and recorded integration events are kept."),
    })
    .default({
      egress: true,
      allowLoopback: false,
      ratePerSecond: 10,
      timeoutMs: 15_000,
      webhookBodyBytes: 1024 * 1024,
      webhookToleranceSeconds: 300,
      retentionDays: 30,
    }),
  backup: z
    .object({
      dir: z
        .string()
        .optional()
        .describe(
          "Where `worksynapse backup` writes archives (default: <dataDir>/backups); keep a copy off the machine.",
        ),
      recipients: z
        .array(z.string().regex(/^age1[0-9a-z]+$/, "an age public key (age1...)"))
        .default([])
        .describe(
          "age public keys (age1...) backups are encrypted to; the site keeps the matching identity offline. Unset: a passphrase.",
        ),
      passphrase: secret(
        z.string().min(12).optional(),
        "Passphrase backups are encrypted with when no recipient is set (the `--passphrase-file` of the command wins).",
      ),
      pgDumpBin: z
        .string()
        .default("pg_dump")
        .describe("The pg_dump binary (PostgreSQL client tools of the server's major version or newer)."),
      pgRestoreBin: z.string().default("pg_restore").describe("The pg_restore binary."),
      schedule: z
        .string()
        .regex(/^([01]\d|2[0-3]):[0-5]\d$/, "a time of day, HH:MM")
        .optional()
        .describe(
          "Time of day (HH:MM, the server's time zone) the worker backs up the installation every day (PostgreSQL only). Unset: no scheduled backups.",
        ),
      keep: z.coerce
        .number()
        .int()
        .min(1)
        .max(1000)
        .default(14)
        .describe(
          "How many of the newest archives the worker's backups keep in backup.dir (older ones are deleted).",
        ),
      includeModels: bool
        .default(false)
        .describe("Whether the worker's backups hold the model files (large; they can be imported again)."),
    })
    .default({
      recipients: [],
      pgDumpBin: "pg_dump",
      pgRestoreBin: "pg_restore",
      keep: 14,
      includeModels: false,
    }),
  secrets: z
    .object({
      masterKey: secret(
        z.string().min(32).optional(),
        "Key that encrypts stored credentials. `worksynapse init` writes it to secrets/master.key.",
      ),
    })
    .default({}),
});

/** The validated configuration of one WorkSynapse process. */
export type Config = z.infer<typeof configSchema>;
