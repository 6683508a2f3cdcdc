"""In-process publish/subscribe for service events other stages react to.

The permit service publishes ``permit.expired``, ``permit.revoked``,
``permit.closed`` and ``permit.amended``; the secure environment subscribes to
stop workspaces and revoke tokens.  Every published event is also in the audit
log (written by the publisher in its own transaction), so a subscriber that was
not running can catch up from the log.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

Handler = Callable[[str, dict[str, Any]], None]
_subscribers: dict[str, list[Handler]] = defaultdict(list)


def subscribe(topic: str, handler: Handler) -> None:
    """Call ``handler(topic, payload)`` for each event on ``topic`` (``"*"`` for all)."""
    _subscribers[topic].append(handler)


def unsubscribe(topic: str, handler: Handler) -> None:
    if handler in _subscribers.get(topic, []):
        _subscribers[topic].remove(handler)


def publish(topic: str, payload: dict[str, Any]) -> None:
    """Deliver an event to its subscribers (after the publisher's transaction committed)."""
    for handler in [*_subscribers.get(topic, []), *_subscribers.get("*", [])]:
        handler(topic, payload)
