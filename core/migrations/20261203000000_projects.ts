import type { Knex } from "knex";
import { enableTenantRls, grantToApp } from "../src/platform/db/migrate.js";

const orgColumn = (t: Knex.CreateTableBuilder) =>
  t.uuid("org_id").notNullable().references("id").inTable("organizations").onDelete("CASCADE");
const ts = (t: Knex.CreateTableBuilder, name: string) => t.timestamp(name, { useTz: true });

const TABLES = [
  "projects",
  "project_members",
  "project_statuses",
  "labels",
  "milestones",
  "tasks",
  "task_assignments",
  "task_dependencies",
  "task_labels",
  "task_comments",
  "task_attachments",
  "activity_logs",
  "task_reminders",
  "project_summaries",
];

/**
 * Projects and tasks: members with project roles, statuses per project (each in a category the KPIs count
 * by), labels, milestones; tasks with assignees, dependencies, subtasks, comments, attachments; the activity
 * log of every change; reminders claimed once across nodes; the AI's weekly summaries.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("projects", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.text("name").notNullable();
    t.text("description").notNullable().defaultTo("");
    t.uuid("created_by").references("id").inTable("users").onDelete("SET NULL");
    t.integer("next_number").notNullable().defaultTo(1);
    ts(t, "archived_at");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index projects_org on projects (org_id, lower(name))");

  await knex.schema.createTable("project_members", (t) => {
    orgColumn(t);
    t.uuid("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("role").notNullable(); // owner | editor | viewer
    ts(t, "added_at").notNullable().defaultTo(knex.fn.now());
    t.primary(["project_id", "user_id"]);
  });
  await knex.raw(
    "alter table project_members add constraint project_members_role check (role in ('owner', 'editor', 'viewer'))",
  );
  await knex.raw("create index project_members_user on project_members (user_id)");

  await knex.schema.createTable("project_statuses", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
    t.text("name").notNullable();
    t.text("category").notNullable(); // todo | started | done
    t.integer("position").notNullable();
  });
  await knex.raw(
    "alter table project_statuses add constraint project_statuses_category check (category in ('todo', 'started', 'done'))",
  );
  await knex.raw("create unique index project_statuses_name on project_statuses (project_id, lower(name))");

  await knex.schema.createTable("labels", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
    t.text("name").notNullable();
    t.text("color").notNullable().defaultTo("gray");
  });
  await knex.raw("create unique index labels_name on labels (project_id, lower(name))");

  await knex.schema.createTable("milestones", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
    t.text("name").notNullable();
    t.date("start_date").notNullable();
    t.date("due_date").notNullable();
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("alter table milestones add constraint milestones_dates check (due_date >= start_date)");

  await knex.schema.createTable("tasks", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
    t.integer("number").notNullable();
    t.uuid("parent_id").references("id").inTable("tasks").onDelete("CASCADE");
    t.text("title").notNullable();
    t.text("description").notNullable().defaultTo("");
    t.uuid("status_id").notNullable().references("id").inTable("project_statuses");
    t.text("priority").notNullable().defaultTo("none");
    ts(t, "due_at");
    t.decimal("estimate_hours", 8, 2);
    t.uuid("milestone_id").references("id").inTable("milestones").onDelete("SET NULL");
    // Order on the board within a status (fractional, so a move rewrites one row).
    t.double("position").notNullable();
    t.uuid("created_by").references("id").inTable("users").onDelete("SET NULL");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
    // First entry into a started status, and entry into a done status (cleared when reopened): cycle time.
    ts(t, "started_at");
    ts(t, "completed_at");
    t.specificType("search", "tsvector");
  });
  await knex.raw(
    "alter table tasks add constraint tasks_priority check (priority in ('none', 'low', 'medium', 'high', 'urgent'))",
  );
  await knex.raw("alter table tasks add constraint tasks_estimate check (estimate_hours >= 0)");
  await knex.raw("create unique index tasks_number on tasks (project_id, number)");
  await knex.raw("create index tasks_board on tasks (project_id, status_id, position)");
  await knex.raw("create index tasks_parent on tasks (parent_id)");
  await knex.raw("create index tasks_due on tasks (org_id, due_at) where completed_at is null");
  await knex.raw("create index tasks_search on tasks using gin (search)");
  await knex.raw(`
    create function tasks_search_update() returns trigger language plpgsql as $$
    begin
      new.search := setweight(to_tsvector('english', coalesce(new.title, '')), 'A')
        || setweight(to_tsvector('english', coalesce(new.description, '')), 'B');
      return new;
    end $$`);
  await knex.raw(`create trigger tasks_search before insert or update of title, description on tasks
    for each row execute function tasks_search_update()`);

  await knex.schema.createTable("task_assignments", (t) => {
    orgColumn(t);
    t.uuid("task_id").notNullable().references("id").inTable("tasks").onDelete("CASCADE");
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    // The assignee turned this task's reminders off.
    t.boolean("muted").notNullable().defaultTo(false);
    ts(t, "assigned_at").notNullable().defaultTo(knex.fn.now());
    t.primary(["task_id", "user_id"]);
  });
  await knex.raw("create index task_assignments_user on task_assignments (user_id)");

  await knex.schema.createTable("task_dependencies", (t) => {
    orgColumn(t);
    t.uuid("task_id").notNullable().references("id").inTable("tasks").onDelete("CASCADE");
    t.uuid("blocked_by_id").notNullable().references("id").inTable("tasks").onDelete("CASCADE");
    t.primary(["task_id", "blocked_by_id"]);
  });
  await knex.raw(
    "alter table task_dependencies add constraint task_dependencies_self check (task_id <> blocked_by_id)",
  );
  await knex.raw("create index task_dependencies_blocker on task_dependencies (blocked_by_id)");

  await knex.schema.createTable("task_labels", (t) => {
    orgColumn(t);
    t.uuid("task_id").notNullable().references("id").inTable("tasks").onDelete("CASCADE");
    t.uuid("label_id").notNullable().references("id").inTable("labels").onDelete("CASCADE");
    t.primary(["task_id", "label_id"]);
  });

  await knex.schema.createTable("task_comments", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("task_id").notNullable().references("id").inTable("tasks").onDelete("CASCADE");
    t.uuid("author_id").references("id").inTable("users").onDelete("SET NULL");
    t.text("body").notNullable();
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "edited_at");
  });
  await knex.raw("create index task_comments_task on task_comments (task_id, created_at)");

  await knex.schema.createTable("task_attachments", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("task_id").notNullable().references("id").inTable("tasks").onDelete("CASCADE");
    t.text("name").notNullable();
    t.text("mime").notNullable();
    t.bigInteger("size_bytes").notNullable();
    t.text("sha256").notNullable();
    t.uuid("uploaded_by").references("id").inTable("users").onDelete("SET NULL");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index task_attachments_task on task_attachments (task_id)");

  // Who changed what, on every task and project change: never edited, read by the task panel.
  await knex.schema.createTable("activity_logs", (t) => {
    t.bigIncrements("id").primary();
    orgColumn(t);
    t.uuid("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
    t.uuid("task_id").references("id").inTable("tasks").onDelete("CASCADE");
    t.uuid("actor_id").references("id").inTable("users").onDelete("SET NULL");
    // "user" or "assistant" (a change the assistant made for the actor)
    t.text("via").notNullable().defaultTo("user");
    t.text("action").notNullable();
    t.jsonb("changes").notNullable().defaultTo("{}");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index activity_logs_task on activity_logs (task_id, id)");
  await knex.raw("create index activity_logs_project on activity_logs (project_id, id)");

  // One row per (task, assignee, kind): it fires once, when fire_at passes; snoozing re-arms it.
  await knex.schema.createTable("task_reminders", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("task_id").notNullable().references("id").inTable("tasks").onDelete("CASCADE");
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("kind").notNullable(); // due_soon | overdue
    ts(t, "fire_at").notNullable();
    ts(t, "fired_at");
    t.integer("fired_count").notNullable().defaultTo(0);
    t.unique(["task_id", "user_id", "kind"]);
  });
  await knex.raw(
    "alter table task_reminders add constraint task_reminders_kind check (kind in ('due_soon', 'overdue'))",
  );
  await knex.raw("create index task_reminders_due on task_reminders (fire_at) where fired_at is null");

  await knex.schema.createTable("project_summaries", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
    t.date("week_start").notNullable();
    // [{ text, taskIds }]: every claim names the tasks it rests on.
    t.jsonb("claims").notNullable();
    t.text("model").notNullable();
    t.uuid("ai_run_id").references("id").inTable("ai_runs").onDelete("SET NULL");
    t.uuid("created_by").references("id").inTable("users").onDelete("SET NULL");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index project_summaries_project on project_summaries (project_id, created_at desc)");

  for (const table of TABLES) {
    await enableTenantRls(knex, table);
    await grantToApp(
      knex,
      table,
      table === "activity_logs" ? "SELECT, INSERT" : "SELECT, INSERT, UPDATE, DELETE",
    );
  }

  // The role of a person in a project (null: not a member).
  await knex.raw(`
    create function project_role(p_project uuid, p_user uuid) returns text
    language sql stable as $$
      select role from project_members where project_id = p_project and user_id = p_user
    $$`);

  /*
   * Fires every reminder that is due, across organizations, in one statement: the claim (fired_at) and the
   * notification are written together, and SKIP LOCKED keeps two nodes from claiming the same row; so each
   * reminder fires exactly once, however many workers run and whenever they were down.
   */
  await knex.raw(`
    create function projects_fire_due_reminders(p_limit int) returns table (org_id uuid, reminder_id uuid, user_id uuid, task_id uuid, kind text)
    language sql volatile security definer set search_path = public, pg_temp as $$
      with due as (
        select r.id from task_reminders r
        join tasks t on t.id = r.task_id
        join task_assignments a on a.task_id = r.task_id and a.user_id = r.user_id
        join projects p on p.id = t.project_id
        where r.fired_at is null and r.fire_at <= now()
          and t.completed_at is null and t.due_at is not null and not a.muted and p.archived_at is null
        order by r.fire_at
        limit p_limit
        for update of r skip locked
      ), fired as (
        update task_reminders r set fired_at = now(), fired_count = r.fired_count + 1
        from due where r.id = due.id
        returning r.id, r.org_id, r.user_id, r.task_id, r.kind
      ), sent as (
        insert into notifications (org_id, user_id, kind, title, body, link, source_type, source_id)
        select f.org_id, f.user_id, 'task.' || f.kind,
          case f.kind when 'overdue' then 'Overdue: ' else 'Due soon: ' end || left(t.title, 280),
          p.name || ' · due ' || to_char(t.due_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC',
          '/projects/' || t.project_id || '?task=' || t.id, 'task_reminder', f.id
        from fired f join tasks t on t.id = f.task_id join projects p on p.id = t.project_id
        returning 1
      )
      select f.org_id, f.id, f.user_id, f.task_id, f.kind from fired f
    $$`);
  const app = (await knex.raw("select current_setting('worksynapse.app_role') as r")).rows[0].r as string;
  await knex.raw("revoke all on function projects_fire_due_reminders(int) from public");
  await knex.raw(`grant execute on function projects_fire_due_reminders(int) to "${app}"`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function projects_fire_due_reminders(int)");
  await knex.raw("drop function project_role(uuid, uuid)");
  for (const table of [...TABLES].reverse()) await knex.schema.dropTable(table);
  await knex.raw("drop function tasks_search_update()");
}
