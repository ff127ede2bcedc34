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
        body = await read_body(req, self.ctx, SubscribeRequest)
        check_url(self.ctx, body.callbackUrl, "callbackUrl")
        sub_id, expires = await self.ctx.engine.subscriptions.create(
            self.ctx.tenant(req), body.callbackUrl, sorted(set(body.eventTypes)),
            body.ttlSeconds, body.deliveryMode, body.groupId or DEFAULT_GROUP,
            body.minIntervalSeconds)
        send(resp, _subscription(sub_id, expires))


class SubscriptionHeartbeat(Resource):
    """POST /v1/codeq/workers/subscriptions/{id}/heartbeat"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                      id: str) -> None:
        sub_id = _id(id)
        expires = await self.ctx.engine.subscriptions.renew(self.ctx.tenant(req), sub_id)
        send(resp, _subscription(sub_id, expires))


class OneSubscription(Resource):
    """DELETE /v1/codeq/workers/subscriptions/{id}"""

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                        id: str) -> None:
        await self.ctx.engine.subscriptions.delete(self.ctx.tenant(req), _id(id))
        resp.status = 204
