import type { Knex } from "knex";

/**
 * A chat post in one statement: the organization for row-level security, the membership and thread checks,
 * the channel's next number (under its row lock), the message, the author's read position, and the channel's
 * audience. Called outside a transaction it is one round trip to PostgreSQL instead of five (begin, set the
 * organization, check, insert, commit), which is most of a post's cost. It runs as the caller (the
 * application role), so row-level security applies to every statement in it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function chat_post(p_org uuid, p_user uuid, p_channel uuid, p_body text, p_parent uuid)
    returns table (id uuid, seq bigint, created_at timestamptz, author_name text, audience uuid[], failure text)
    language plpgsql as $$
    declare
      ch record;
      next_seq bigint;
      msg record;
    begin
      perform set_config('app.org_id', p_org::text, true);
      -- The socket's caller is reused between revalidations: a person deactivated since cannot post.
      if not exists (select 1 from users u where u.id = p_user and u.status = 'active') then
        return query select null::uuid, null::bigint, null::timestamptz, null::text, null::uuid[], 'inactive';
        return;
      end if;
      select c.kind, c.archived_at,
             exists (select 1 from chat_members m where m.channel_id = c.id and m.user_id = p_user) as member,
             array(select m.user_id from chat_members m where m.channel_id = c.id) as members
        into ch from chat_channels c where c.id = p_channel;
      if not found or (ch.kind <> 'public' and not ch.member) then
        return query select null::uuid, null::bigint, null::timestamptz, null::text, null::uuid[], 'not_found';
        return;
      end if;
      if not ch.member then
        return query select null::uuid, null::bigint, null::timestamptz, null::text, null::uuid[], 'not_member';
        return;
      end if;
      if ch.archived_at is not null then
        return query select null::uuid, null::bigint, null::timestamptz, null::text, null::uuid[], 'archived';
        return;
      end if;
      if p_parent is not null then
        if not exists (select 1 from chat_messages p where p.id = p_parent and p.channel_id = p_channel) then
          return query select null::uuid, null::bigint, null::timestamptz, null::text, null::uuid[], 'no_parent';
          return;
        end if;
        if exists (select 1 from chat_messages p where p.id = p_parent and p.parent_id is not null) then
          return query select null::uuid, null::bigint, null::timestamptz, null::text, null::uuid[], 'nested';
          return;
        end if;
      end if;
      update chat_channels c set last_seq = c.last_seq + 1 where c.id = p_channel returning c.last_seq into next_seq;
      insert into chat_messages (org_id, channel_id, seq, user_id, body, parent_id)
        values (p_org, p_channel, next_seq, p_user, p_body, p_parent)
        returning chat_messages.id, chat_messages.created_at into msg;
      update chat_members m set last_read_seq = next_seq where m.channel_id = p_channel and m.user_id = p_user;
      return query select msg.id, next_seq, msg.created_at,
        (select u.display_name from users u where u.id = p_user), ch.members, null::text;
    end $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function chat_post(uuid, uuid, uuid, text, uuid)");
}
