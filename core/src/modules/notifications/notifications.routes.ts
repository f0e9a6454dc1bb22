import { z } from "zod";
import type { Api } from "../../platform/http/api.js";
import { pageQuery } from "../identity/identity.schemas.js";
import * as svc from "./notifications.service.js";

const notificationSchema = z
  .object({
    id: z.uuid(),
    kind: z.string(),
    title: z.string(),
    body: z.string(),
    link: z.string(),
    actorName: z.string().nullable(),
    createdAt: z.string(),
    readAt: z.string().nullable(),
  })
  .meta({ id: "Notification" });

/** The notification center: your notifications, and marking them read. */
export function registerNotificationRoutes(api: Api): void {
  const tags = ["notifications"];
  api.route({
    method: "get",
    path: "/api/notifications",
    operationId: "listNotifications",
    summary: "Your notifications, newest first, with the unread count",
    tags,
    query: pageQuery.extend({
      unread: z
        .enum(["true", "false"])
        .transform((v) => v === "true")
        .optional(),
    }),
    response: z.object({ data: z.array(notificationSchema), unread: z.number() }),
    handler: (_ctx, { query }, scope) => svc.listNotifications(scope, query),
  });
  api.route({
    method: "post",
    path: "/api/notifications/read",
    operationId: "markNotificationsRead",
    summary: "Mark notifications read: the listed ones, or all",
    tags,
    body: z
      .strictObject({ ids: z.array(z.uuid()).max(200).optional(), all: z.boolean().optional() })
      .refine((b) => b.all || (b.ids && b.ids.length > 0), "Name the notifications, or say all."),
    status: 204,
    handler: (_ctx, { body }, scope) => svc.markRead(scope, body),
  });
}
