import type { Svc } from "./projects.service.js";
import { roleIn } from "./projects.service.js";

const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

/**
 * A project's progress figures, each with the tasks it counts (so the dashboard links every number to its
 * tasks). Weeks start on Monday and days are UTC days.
 */
export async function projectKpis(svc: Svc, projectId: string, q: { weeks: number; milestoneId?: string }) {
  await roleIn(svc, projectId);
  const { trx } = svc;
  const { total, done, now } = (
    await trx.raw(
      `select count(*)::int as total, count(*) filter (where completed_at is not null)::int as done, now() as now
       from tasks where project_id = ?`,
      [projectId],
    )
  ).rows[0] as { total: number; done: number; now: Date };
  const overdue = (await trx("tasks")
    .where({ project_id: projectId })
    .whereNull("completed_at")
    .where("due_at", "<", trx.fn.now())
    .orderBy("due_at")
    .pluck("id")) as string[];

  const throughput = (
    await trx.raw(
      `select to_char(w, 'YYYY-MM-DD') as week_start,
         coalesce(array_agg(t.id order by t.completed_at) filter (where t.id is not null), '{}') as ids
       from generate_series(date_trunc('week', now() at time zone 'UTC') - (?::int - 1) * interval '1 week',
                            date_trunc('week', now() at time zone 'UTC'), interval '1 week') w
       left join tasks t on t.project_id = ? and t.completed_at is not null
         and (t.completed_at at time zone 'UTC') >= w and (t.completed_at at time zone 'UTC') < w + interval '1 week'
       group by w order by w`,
      [q.weeks, projectId],
    )
  ).rows as { week_start: string; ids: string[] }[];

  const cycle = (
    await trx.raw(
      `select count(*)::int as n,
         percentile_cont(0.5) within group (order by extract(epoch from completed_at - started_at)) / 3600 as median,
         avg(extract(epoch from completed_at - started_at)) / 3600 as average,
         coalesce(array_agg(id), '{}') as ids
       from tasks where project_id = ? and started_at is not null and completed_at is not null
         and (completed_at at time zone 'UTC') >= date_trunc('week', now() at time zone 'UTC') - (?::int - 1) * interval '1 week'`,
      [projectId, q.weeks],
    )
  ).rows[0] as { n: number; median: number | null; average: number | null; ids: string[] };

  // The milestone asked for, else the next one due, else the last one.
  const milestone =
    (q.milestoneId
      ? await trx("milestones").where({ id: q.milestoneId, project_id: projectId }).first()
      : ((await trx("milestones")
          .where({ project_id: projectId })
          .whereRaw("due_date >= (now() at time zone 'UTC')::date")
          .orderBy("due_date")
          .first()) ??
        (await trx("milestones").where({ project_id: projectId }).orderBy("due_date", "desc").first()))) ??
    null;
  let burndown = null;
  if (milestone) {
    const rows = (
      await trx.raw(
        `select to_char(g.d, 'YYYY-MM-DD') as date, g.d::date > (now() at time zone 'UTC')::date as future,
           (select count(*)::int from tasks t where t.milestone_id = ms.id
              and (t.created_at at time zone 'UTC') < g.d + interval '1 day'
              and (t.completed_at is null or (t.completed_at at time zone 'UTC') >= g.d + interval '1 day')) as remaining
         from milestones ms, generate_series(ms.start_date::timestamp, least(ms.due_date, ms.start_date + 365)::timestamp, interval '1 day') g(d)
         where ms.id = ?
         order by g.d`,
        [milestone.id],
      )
    ).rows as { date: string; future: boolean; remaining: number }[];
    const scope = Number(
      (await trx("tasks").where({ milestone_id: milestone.id }).count({ n: "*" }).first())?.n ?? 0,
    );
    const span = Math.max(1, rows.length - 1);
    burndown = {
      milestoneId: milestone.id as string,
      name: milestone.name as string,
      scope,
      points: rows.map((r, i) => ({
        date: r.date,
        remaining: r.future ? null : r.remaining,
        ideal: round(scope * (1 - i / span), 2),
      })),
    };
  }

  const workload = (
    await trx.raw(
      `select m.user_id, u.display_name,
         count(t.id)::int as open, coalesce(sum(t.estimate_hours), 0)::float as hours,
         count(t.id) filter (where t.due_at < now())::int as overdue,
         coalesce(array_agg(t.id order by t.due_at nulls last) filter (where t.id is not null), '{}') as ids
       from project_members m join users u on u.id = m.user_id
       left join task_assignments a on a.user_id = m.user_id
         and a.task_id in (select id from tasks where project_id = m.project_id)
       left join tasks t on t.id = a.task_id and t.completed_at is null
       where m.project_id = ?
       group by m.user_id, u.display_name order by open desc, lower(u.display_name)`,
      [projectId],
    )
  ).rows as {
    user_id: string;
    display_name: string;
    open: number;
    hours: number;
    overdue: number;
    ids: string[];
  }[];

  return {
    asOf: new Date(now).toISOString(),
    total,
    done,
    completionRate: total ? round(done / total, 4) : 0,
    overdue: { count: overdue.length, taskIds: overdue },
    throughput: throughput.map((w) => ({ weekStart: w.week_start, done: w.ids.length, taskIds: w.ids })),
    cycleTime: {
      samples: cycle.n,
      medianHours: cycle.median === null ? null : round(Number(cycle.median)),
      averageHours: cycle.average === null ? null : round(Number(cycle.average)),
      taskIds: cycle.ids,
    },
    burndown,
    workload: workload.map((w) => ({
      userId: w.user_id,
      displayName: w.display_name,
      open: w.open,
      openHours: round(w.hours),
      overdue: w.overdue,
      taskIds: w.ids,
    })),
  };
}
