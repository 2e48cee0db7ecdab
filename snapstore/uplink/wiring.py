# -*- test-case-name: tests.test_uplink -*-
"""
Fitting the uplink's parts into the store endpoint (called by the
composition root for a node that is not C{--offline}).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import attrs
from prometheus_client import Counter

from snapstore.uplink.answers import AnswersFile, RelayedAnswers
from snapstore.uplink.follow import Follower, FollowList, FOLLOWS_FILE, parseWindow
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


def installUplink(reactor: Any, settings: Any, parts: Any) -> Uplink:
    """
    Put the stale-answering agent under the shared upstream client, the
    C{--upstream-rate} throttle on the download resource's fills, and the
    follower among the parts' services; record the result in
    C{parts.uplink}.
    """
    counter = None
    if getattr(parts, "metrics", None) is not None:
        counter = Counter("snapstore_stale_answers",
                          "Answers given from relayed content while upstream failed, by kind.",
                          ["kind"], registry=parts.metrics.registry)
    health = UplinkHealth(reactor, counter, getattr(parts, "metrics", None))
    answers = RelayedAnswers(reactor, settings.staleMaxAge)
    if settings.serveStale:
        parts.services.append(AnswersFile(reactor, answers,
                                          os.path.join(settings.dataDir, ANSWERS_FILE)))
    upstream = parts.upstream
    upstream.agent = StaleAgent(upstream.agent, settings.upstream, answers, reactor,
                                max(0.5, settings.upstreamTimeout * STALE_DEADLINE_SHARE),
                                health, enabled=settings.serveStale)
    throttle = makeThrottle(reactor, settings.upstreamRate)
    download = _downloadOf(parts)
    follower = None
    follows = FollowList(os.path.join(settings.dataDir, FOLLOWS_FILE))
    if download is not None:
        if throttle:
            download.throttle = throttle
        follower = Follower(reactor, follows, upstream, download, parts.state.recordBlob,
                            settings.followInterval, parseWindow(settings.prefetchWindow),
                            makeThrottle(reactor, settings.prefetchRate), answers.reported)
        parts.services.append(follower)
    parts.uplink = Uplink(health, answers, follows, follower, settings.serveStale, throttle)
    return parts.uplink


def _downloadOf(parts: Any) -> Any:
    """
    The L{DownloadResource} behind the store root (under the rules' gate
    when there are rules), or C{None}.
    """
    download = getattr(parts.root, "download", None)
    while download is not None and not hasattr(download, "prefetch"):
        download = getattr(download, "download", None)
    return download
