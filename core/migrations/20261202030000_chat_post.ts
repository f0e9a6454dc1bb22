import type { Knex } from "knex";

/**
 * How every chat message is stored, in one statement: the organization for row-level security, the author
 * (active, a member, the channel not archived, a thread's first message as parent), the channel's next number
 * (under its row lock), the message, the author's read position, and the channel's audience. Called outside a
 * transaction (posts over the socket) it is one round trip to PostgreSQL instead of five (begin, set the
 * organization, check, insert, commit). With p_as_assistant the message is the assistant's reply to p_user
 * (who must be a member). It runs as the caller (the application role): row-level security applies to all of it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function chat_post(p_org uuid, p_user uuid, p_channel uuid, p_body text, p_parent uuid,
      p_as_assistant boolean default false)
    returns table (id uuid, seq bigint, created_at timestamptz, author_name text, audience uuid[], kind text,
      name text, failure text)
    language plpgsql as $$
    declare
      ch record;
      why text;
      next_seq bigint;
      msg record;
    begin
      perform set_config('app.org_id', p_org::text, true);
      select c.kind, c.name, c.archived_at,
             exists (select 1 from chat_members m where m.channel_id = c.id and m.user_id = p_user) as member,
             array(select m.user_id from chat_members m where m.channel_id = c.id) as members
        into ch from chat_channels c where c.id = p_channel;
      -- The socket reuses its caller between revalidations: a person deactivated since cannot post.
      why := case
        when not exists (select 1 from users u where u.id = p_user and u.status = 'active') then 'inactive'
        when ch is null or (ch.kind <> 'public' and not ch.member) then 'not_found'
        when not ch.member then 'not_member'
        when ch.archived_at is not null then 'archived'
        when p_parent is not null and not exists (
          select 1 from chat_messages p where p.id = p_parent and p.channel_id = p_channel) then 'no_parent'
        when p_parent is not null and exists (
          select 1 from chat_messages p where p.id = p_parent and p.parent_id is not null) then 'nested'
      end;
      if why is not null then
        return query select null::uuid, null::bigint, null::timestamptz, null::text, null::uuid[], null::text,
          null::text, why;
        return;
      end if;
      update chat_channels c set last_seq = c.last_seq + 1 where c.id = p_channel returning c.last_seq into next_seq;
      insert into chat_messages (org_id, channel_id, seq, user_id, body, parent_id, author_kind, asked_by)
        values (p_org, p_channel, next_seq, case when p_as_assistant then null else p_user end, p_body, p_parent,
          case when p_as_assistant then 'assistant' else 'user' end, case when p_as_assistant then p_user end)
        returning chat_messages.id, chat_messages.created_at into msg;
      if not p_as_assistant then
        update chat_members m set last_read_seq = next_seq where m.channel_id = p_channel and m.user_id = p_user;
      end if;
      return query select msg.id, next_seq, msg.created_at,
        case when p_as_assistant then null else (select u.display_name from users u where u.id = p_user) end,
        ch.members, ch.kind, ch.name, null::text;
    end $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function chat_post(uuid, uuid, uuid, text, uuid, boolean)");
}
