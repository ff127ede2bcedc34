"""Workers' availability webhooks: subscribe, renew, unsubscribe."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import falcon

from codeq.api.common import Resource, check_url, read_body, send
from codeq.errors import BadRequest
from codeq.schemas import UUID_PATTERN, SubscribeRequest, Subscription

_UUID = re.compile(UUID_PATTERN)
# Subscriptions in group or hash mode that name no group form this one.
DEFAULT_GROUP = "default"


def _subscription(sub_id: str, expires_ms: int) -> Subscription:
    return Subscription(sub_id, datetime.fromtimestamp(expires_ms / 1000, UTC))


def _id(raw: str) -> str:
    if not _UUID.match(raw):
        raise BadRequest("subscription id must be a UUID", field="id")
    return raw.lower()


class Subscribe(Resource):
    """POST /v1/codeq/workers/subscriptions"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        who = await self.ctx.caller(req, "codeq:subscribe")
        body = await read_body(req, self.ctx, SubscribeRequest)
        check_url(self.ctx, body.callbackUrl, "callbackUrl")
        kinds = body.eventTypes
        if who.event_types is not None:
            # A token limited to some commands subscribes to those at most.
            who.allow(kinds)
            kinds = kinds or list(who.event_types)
        sub_id, expires = await self.ctx.engine.subscriptions.create(
            who.tenant, body.callbackUrl, sorted(set(kinds)),
            body.ttlSeconds, body.deliveryMode, body.groupId or DEFAULT_GROUP,
            body.minIntervalSeconds)
        send(resp, _subscription(sub_id, expires))


class SubscriptionHeartbeat(Resource):
    """POST /v1/codeq/workers/subscriptions/{id}/heartbeat"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                      id: str) -> None:
        who = await self.ctx.caller(req, "codeq:subscribe")
        sub_id = _id(id)
        expires = await self.ctx.engine.subscriptions.renew(who.tenant, sub_id)
        send(resp, _subscription(sub_id, expires))


class OneSubscription(Resource):
    """DELETE /v1/codeq/workers/subscriptions/{id}"""

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                        id: str) -> None:
        who = await self.ctx.caller(req, "codeq:subscribe")
        await self.ctx.engine.subscriptions.delete(who.tenant, _id(id))
        resp.status = 204
