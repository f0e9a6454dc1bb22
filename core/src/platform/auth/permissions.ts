/** Built-in roles every organization has. */
export const BUILTIN_ROLES = ["owner", "admin", "member", "guest", "auditor"] as const;
/** A built-in role key. */
export type BuiltinRole = (typeof BUILTIN_ROLES)[number];

/** What a module declares for one permission: what it allows and which built-in roles hold it. */
export interface PermissionSpec {
  description: string;
  roles: BuiltinRole[];
}

/** A permission in the catalog. */
export interface PermissionDef extends PermissionSpec {
  code: string;
  module: string;
}

/** The permissions of every module, built once from the modules' declarations. */
export class PermissionCatalog {
  private readonly defs = new Map<string, PermissionDef>();

  constructor(modules: Record<string, Record<string, PermissionSpec>>) {
    for (const [module, specs] of Object.entries(modules)) {
      for (const [code, spec] of Object.entries(specs)) {
        if (!/^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$/.test(code)) throw new Error(`bad permission code ${code}`);
        if (this.defs.has(code)) throw new Error(`permission ${code} declared twice`);
        // Owners hold every permission.
        this.defs.set(code, {
          code,
          module,
          description: spec.description,
          roles: [...new Set<BuiltinRole>(["owner", ...spec.roles])],
        });
      }
    }
  }

  /** Every permission, sorted by code. */
  all(): PermissionDef[] {
    return [...this.defs.values()].sort((a, b) => a.code.localeCompare(b.code));
  }

  /** True when a code is declared. */
  has(code: string): boolean {
    return this.defs.has(code);
  }

  /** The permissions of a built-in role, from the code (so new permissions reach existing organizations). */
  ofBuiltinRole(role: BuiltinRole): string[] {
    return this.all()
      .filter((p) => p.roles.includes(role))
      .map((p) => p.code);
  }
}

/**
 * The installation's catalog, by database handle (as platform/db/keys.ts binds the master key): it is built at
 * start from the module and plugin definitions, so the code that reads it never imports the module list.
 */
const catalogs = new WeakMap<object, PermissionCatalog>();

const configOf = (db: object) => (db as { client: { config: object } }).client.config;

/** Binds the catalog to a database handle and its transactions (done once, where the app is built). */
export function bindCatalog(db: object, catalog: PermissionCatalog): void {
  catalogs.set(configOf(db), catalog);
}

/** The catalog bound to a handle or one of its transactions; throws when none was bound. */
export function catalogOf(db: object): PermissionCatalog {
  const c = catalogs.get(configOf(db));
  if (!c) throw new Error("no permission catalog is bound to this database handle (see modules/catalog.ts)");
  return c;
}
