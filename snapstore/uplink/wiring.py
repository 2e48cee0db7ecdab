# -*- test-case-name: tests.test_uplink -*-
"""
The uplink's parts, built by the composition root for a node that is
not C{--offline}: the stale-answering agent goes under the upstream
client, the rate cap into the download resource, the follower among the
services (docs/architecture.md).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import attrs
from prometheus_client import Counter

from snapstore.config import parseWindow
from snapstore.uplink.answers import AnswersFile, RelayedAnswers
from snapstore.uplink.follow import (
    Follower,
    FollowList,
    FOLLOWS_FILE,
    revisionsKnownTo,
)
from snapstore.uplink.rate import Throttle, makeThrottle
from snapstore.uplink.stale import StaleAgent, UplinkHealth

#: The share of C{--upstream-timeout} upstream gets before a stale answer
#: is given instead (the rest is for answering before the relay gives up).
STALE_DEADLINE_SHARE = 0.75
#: Where relayed answers are kept across restarts, in C{--data-dir}.
ANSWERS_FILE = "stale-answers.json"


@attrs.define
class Uplink:
    """
    The uplink's parts, for the admin API.
    """

    health: UplinkHealth
    answers: RelayedAnswers
    follows: FollowList
    follower: Optional[Follower]
    serveStale: bool
    throttle: Throttle


@attrs.define
class UplinkParts:
    """
    The uplink's parts that exist before the store endpoint: the health
    record, the relayed answers, the rate cap on fills, the answers file;
    L{agentFor} puts the stale-answering agent under the upstream client,
    and L{finish} makes the follower once the download resource exists.
    """

    health: UplinkHealth
    answers: RelayedAnswers
    throttle: Throttle
    serveStale: bool
    services: list[Any]
    clock: Any
    base: str
    staleDeadline: float

    @classmethod
    def fromSettings(cls, reactor: Any, settings: Any, metrics: Any) -> "UplinkParts":
        counter = Counter("snapstore_stale_answers",
                          "Answers given from relayed content while upstream failed, by kind.",
                          ["kind"], registry=metrics.registry)
        health = UplinkHealth(reactor, counter, metrics)
        answers = RelayedAnswers(reactor, settings.staleMaxAge)
        services: list[Any] = []
        if settings.serveStale:
            services.append(AnswersFile(reactor, answers,
                                        os.path.join(settings.dataDir, ANSWERS_FILE)))
        return cls(health, answers, makeThrottle(reactor, settings.upstreamRate),
                   settings.serveStale, services, reactor, settings.upstream,
                   max(0.5, settings.upstreamTimeout * STALE_DEADLINE_SHARE))

    def agentFor(self, live: Any) -> StaleAgent:
        """
        The agent the upstream client should use: C{live}, answering from
        relayed content when upstream fails (C{--serve-stale}).
        """
        return StaleAgent(live, self.base, self.answers, self.clock, self.staleDeadline,
                          self.health, enabled=self.serveStale)

    def finish(self, reactor: Any, settings: Any, upstream: Any, download: Any,
               state: Any, assertions: Any = None) -> Uplink:
        """
        The follower (follows and prefetch through C{download}, assertions
        into C{assertions}' cache) and the L{Uplink} the admin API shows.
        """
        follows = FollowList(os.path.join(settings.dataDir, FOLLOWS_FILE))
        follower = Follower(reactor, follows, upstream, download, state.recordBlob,
                            settings.followInterval, parseWindow(settings.prefetchWindow),
                            makeThrottle(reactor, settings.prefetchRate), self.answers.reported,
                            knownRevisions=revisionsKnownTo(state), assertions=assertions)
        return Uplink(self.health, self.answers, follows, follower, self.serveStale,
                      self.throttle)
