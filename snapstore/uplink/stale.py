# -*- test-case-name: tests.test_uplink -*-
"""
Serve stale: answer from what upstream said before, while it fails.

L{StaleAgent} sits where the offline mode puts its local agent: under the
upstream client that the relay, the assertion resource and the rules
share.  Refresh, info, find and assertion calls go upstream as always; a
good answer is relayed and learned (L{snapstore.uplink.answers}).  When
upstream refuses, cannot be reached, does not answer within the deadline
(a little under C{--upstream-timeout}, so the device gets an answer before
the relay would give up) or answers 5xx, the call is answered by the
offline mode's L{LocalStoreAgent} over the learned answers, with
C{X-Cache: STALE}.  Everything above (admission rules, override pins, URL
rewriting, blob records) then runs as for a live answer.

What was never seen gets the upstream failure, as without this module.
Every other call (downloads, device sessions, categories) goes upstream
untouched.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.http import PotentialDataLoss as HTTPPotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from snapstore.http.bodies import BytesProducer, ParsedJSON
from snapstore.offline.store import BodyCollector, LocalResponse, LocalStoreAgent
from snapstore.store.compression import EncodingError, Inflater, contentCodings
from snapstore.store.upstream import UpstreamError, describeFailure, discardBody, isCancellation
from snapstore.uplink.answers import RelayedAnswers

#: Answers larger than this are relayed but not learned.
MAX_LEARNED = 16 << 20
#: The request headers the memory reads when learning (the architecture a
#: refresh or find is for, whether it is the follower's own call).
_LEARNT_HEADERS = (b"snap-device-architecture", b"x-ubuntu-architecture", b"user-agent")
#: The largest answer to a covered call read (as sent), as the relay's
#: own bound on the answers it reads.
MAX_BODY = 64 << 20
#: An answer identical to one learnt (same call, same device headers the
#: memory reads, same request body, same answer) within this many seconds
#: is not learnt again: the memory would only move its times forward, by
#: less than this, against the days answers stay usable (C{maxAge}).
#: Learning is a parse and a walk of the answer, a tenth of a relayed
#: refresh's cost (issue 20), and a fleet's refreshes repeat.
RELEARN_AFTER = 60.0
#: Answers remembered as learnt; past this the memory starts afresh.
MAX_LEARNT = 10_000


class UplinkHealth:
    """
    Whether upstream answers, since when it fails, and how many stale
    answers were given: for C{snapstore status} and C{/metrics}.
    """

    def __init__(self, clock: Any, counter: Any = None, metrics: Any = None) -> None:
        self.clock = clock
        self.counter = counter
        self.metrics = metrics
        self.failingSince: Optional[float] = None
        self.lastAnswer: Optional[float] = None
        self.lastError = ""
        self.staleAnswers = 0

    def answered(self) -> None:
        self.failingSince = None
        self.lastAnswer = self.clock.seconds()
        self.lastError = ""

    def failed(self, why: str) -> None:
        if self.failingSince is None:
            self.failingSince = self.clock.seconds()
        self.lastError = why

    def servedStale(self, kind: str, code: str) -> None:
        """
        A stale answer was given for a call upstream failed with C{code}:
        the failure still counts in C{snapstore_upstream_errors_total}
        (alerts on it keep firing during an outage), and the answer in
        C{snapstore_stale_answers_total}.
        """
        if self.metrics is not None:
            self.metrics.upstreamFailed(code)
        self.staleAnswers += 1
        if self.counter is not None:
            self.counter.labels(kind).inc()

    def status(self, enabled: bool) -> dict[str, Any]:
        return {"ok": self.failingSince is None,
                "failing-since": self.failingSince,
                "last-answer": self.lastAnswer,
                "last-error": self.lastError or None,
                "serve-stale": enabled,
                "serving-stale": enabled and self.failingSince is not None,
                "stale-answers": self.staleAnswers}


@functools.lru_cache(maxsize=1024)
def classify(method: bytes, path: str) -> Optional[str]:
    """
    Which answer kind a call is, for those stale answers cover.
    """
    segments = [unquote(s) for s in path.strip("/").split("/")]
    if method == b"POST" and segments == ["v2", "snaps", "refresh"]:
        return "refresh"
    if method == b"GET" and len(segments) == 4 and segments[:3] == ["v2", "snaps", "info"]:
        return "info"
    if method == b"GET" and segments == ["v2", "snaps", "find"]:
        return "find"
    if method == b"GET" and len(segments) > 3 and segments[:2] == ["v2", "assertions"]:
        return "assertion"
    return None


class _Gather(Protocol):
    """
    Reads a whole body as sent (still coded) and hands it to C{finished},
    or a L{Failure}: a 502 past C{limit} bytes, the bound the relay puts on
    the answers it reads.  Called directly, not through a L{Deferred}: it
    is one step of L{_LiveCall}.
    """

    transport: Any = None

    def __init__(self, limit: int, what: str, finished: Callable[[Any], None]) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.what = what
        self.finished: Optional[Callable[[Any], None]] = finished

    def abandon(self) -> None:
        """
        Stop reading: nothing more is handed on.
        """
        self.finished = None
        self.parts = []
        if self.transport is not None:
            self.transport.stopProducing()

    def _finish(self, result: Any) -> None:
        finished, self.finished = self.finished, None
        if finished is not None:
            finished(result)

    def dataReceived(self, data: bytes) -> None:
        if self.finished is None:
            return
        self.size += len(data)
        if self.size > self.limit:
            finished = self.finished
            self.abandon()
            assert finished is not None
            finished(Failure(UpstreamError(
                502, "upstream-bad-response",
                f"upstream answer to {self.what} is larger than {self.limit} bytes")))
            return
        self.parts.append(data)

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        if reason is None or reason.check(ResponseDone, PotentialDataLoss, HTTPPotentialDataLoss):
            self._finish(b"".join(self.parts))
        else:
            self._finish(reason)


class _TooSlow(Exception):
    """
    Upstream did not answer within the stale deadline.
    """


class _LiveCall:
    """
    One covered call asked upstream: its answer read whole within the
    deadline, then learnt and handed on in L{result}; when upstream fails,
    handed to L{StaleAgent._afterFailure}.

    Callbacks rather than a coroutine: a live refresh passes through this
    with one L{Deferred} of its own (L{result}), where the coroutines it
    replaced cost two more, and two resumptions (issue 20).

    @ivar result: fires with the answer (a L{LocalResponse}), or fails as
        upstream did when nothing stale can be given instead.
    """

    def __init__(self, agent: "StaleAgent", kind: str, method: bytes, uri: bytes,
                 headers: Headers, body: Optional[bytes], parsedBody: Optional[ParsedJSON]) -> None:
        self.agent = agent
        self.kind = kind
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        self.parsedBody = parsedBody
        self.result: Deferred[IResponse] = Deferred(self._cancel)
        self._response: Any = None
        self._gather: Optional[_Gather] = None
        self._timedOut = False
        self._cancelled = False
        self._timer = agent.clock.callLater(agent.deadline, self._expire)
        producer = BytesProducer(body, parsedBody) if body is not None else None
        self._asked: Optional[Deferred[Any]] = None
        try:
            asked = agent.live.request(method, uri, headers, producer)
        except Exception:
            self._failed(Failure())  # as if it had failed the Deferred
            return
        self._asked = asked
        asked.addCallbacks(self._answered, self._failed)

    def _what(self) -> str:
        return f"{self.method.decode()} {self.uri.decode('ascii', 'replace')}"

    def _answered(self, response: IResponse) -> None:
        self._asked = None
        if self._cancelled or self.result.called:  # given up: the body is not wanted
            discardBody(response)
            return
        self._response = response
        self._gather = _Gather(MAX_BODY, self._what(), self._read)
        response.deliverBody(self._gather)

    def _read(self, raw: Any) -> None:
        self._gather = None
        if isinstance(raw, Failure):
            self._failed(raw)
            return
        self._stopTimer()
        if self._cancelled or self.result.called:
            return
        response = self._response
        if response.code >= 500:
            self.agent.health.failed(f"upstream answered {response.code}")
            self._settle(self.agent._afterErrorStatus(
                self.kind, self.method, self.uri, self.headers, self.body,
                LocalResponse(response.code, response.phrase, response.headers, raw)))
            return
        self.agent.health.answered()
        decoded = None
        if response.code == 200:
            decoded = self.agent._learn(self.kind, self.uri, self.headers, self.parsedBody,
                                        response, raw)
        self.result.callback(LocalResponse(response.code, response.phrase, response.headers,
                                           raw, decoded))

    def _failed(self, failure: Failure) -> None:
        self._asked = None
        self._stopTimer()
        if self._cancelled or self.result.called:
            return  # the caller gave up: nothing to answer
        if self._timedOut:
            # Cancelling the agent's request fails it with its own wrapper
            # of the cancellation: the timer says whether it was ours.
            failure = Failure(_TooSlow(f"upstream did not answer {self._what()} "
                                       f"within {self.agent.deadline:g}s"))
        self._settle(self.agent._afterFailure(self.kind, self.method, self.uri, self.headers,
                                              self.body, failure))

    def _settle(self, outcome: Deferred[IResponse]) -> None:
        outcome.chainDeferred(self.result)

    def _expire(self) -> None:
        self._timedOut = True
        self._stopWaiting()
        if self._gather is not None:
            self._gather = None
            self._failed(Failure(CancelledError()))

    def _cancel(self, result: Deferred[IResponse]) -> None:
        """
        The caller gave up (its client left): stop asking upstream; the
        result fails with L{CancelledError}.
        """
        self._cancelled = True
        self._stopTimer()
        self._stopWaiting()

    def _stopWaiting(self) -> None:
        if self._asked is not None:
            self._asked.cancel()
        elif self._gather is not None:
            self._gather.abandon()

    def _stopTimer(self) -> None:
        if self._timer.active():
            self._timer.cancel()


@implementer(IAgent)
class StaleAgent:
    """
    An L{IAgent} relaying to C{live} and answering from C{answers} when it
    fails.

    @ivar enabled: C{False} (C{--serve-stale no}) only learns nothing and
        relays; failures stay failures.
    @ivar deadline: seconds upstream has to answer a covered call in full
        before a stale answer is given instead.
    """

    log = Logger()

    def __init__(self, live: IAgent, base: str, answers: RelayedAnswers, clock: Any,
                 deadline: float, health: UplinkHealth, enabled: bool = True) -> None:
        self.live = live
        self.base = base if base.endswith("/") else base + "/"
        self.answers = answers
        self.clock = clock
        self.deadline = deadline
        self.health = health
        self.enabled = enabled
        self.local = LocalStoreAgent(answers, self.base, live)
        # hash of an answer and what it answered -> when it was learnt
        self._learnt: dict[int, float] = {}

    def request(self, method: bytes, uri: bytes, headers: Optional[Headers] = None,
                bodyProducer: Any = None) -> Deferred[IResponse]:
        text = uri.decode("ascii", "replace")
        kind = None
        if self.enabled and text.startswith(self.base):
            kind = classify(method, urlsplit(text[len(self.base) - 1:]).path)
        if kind is None:
            return self.live.request(method, uri, headers, bodyProducer)
        if headers is None:
            headers = Headers()
        if bodyProducer is None:
            return _LiveCall(self, kind, method, uri, headers, None, None).result
        if isinstance(bodyProducer, BytesProducer):
            # Already in memory, maybe parsed (the relay's): taken as is.
            parsed = bodyProducer.parsed
            if parsed is None:
                parsed = ParsedJSON(bodyProducer.body)
            return _LiveCall(self, kind, method, uri, headers, bodyProducer.body, parsed).result
        return Deferred.fromCoroutine(self._collected(kind, method, uri, headers, bodyProducer))

    async def _collected(self, kind: str, method: bytes, uri: bytes, headers: Headers,
                         bodyProducer: Any) -> IResponse:
        """
        Ask with a body that must first be produced.
        """
        collected = BodyCollector()
        await bodyProducer.startProducing(collected)
        body = b"".join(collected.parts)
        return await _LiveCall(self, kind, method, uri, headers, body, ParsedJSON(body)).result

    def _afterFailure(self, kind: str, method: bytes, uri: bytes, headers: Headers,
                      body: Optional[bytes], failure: Failure) -> Deferred[IResponse]:
        """
        A covered call failed (C{failure}): the stale answer, if one is
        known, else the failure as the relay maps it.
        """
        return Deferred.fromCoroutine(self._staleOrFailure(kind, method, uri, headers, body,
                                                           failure))

    def _afterErrorStatus(self, kind: str, method: bytes, uri: bytes, headers: Headers,
                          body: Optional[bytes], answer: IResponse) -> Deferred[IResponse]:
        """
        Upstream answered a covered call with a 5xx (C{answer}): the stale
        answer, if one is known, else upstream's own.
        """
        return Deferred.fromCoroutine(self._staleOrAnswer(kind, method, uri, headers, body,
                                                          answer))

    async def _staleOrAnswer(self, kind: str, method: bytes, uri: bytes, headers: Headers,
                             body: Optional[bytes], answer: IResponse) -> IResponse:
        stale = await self._stale(kind, method, uri, headers, body,
                                  f"upstream-status-{answer.code}")
        return answer if stale is None else stale

    async def _staleOrFailure(self, kind: str, method: bytes, uri: bytes, headers: Headers,
                              body: Optional[bytes], failure: Failure) -> IResponse:
        error = failure.value
        if isinstance(error, _TooSlow):
            code = "upstream-timeout"
        else:
            if isCancellation(failure):
                # The caller gave up (its client left): not upstream's fault.
                raise CancelledError()
            code = describeFailure(failure, uri.decode("ascii", "replace"), self.deadline).code
        self.health.failed(failure.getErrorMessage() or type(error).__name__)
        stale = await self._stale(kind, method, uri, headers, body, code)
        if stale is None:
            if isinstance(error, _TooSlow):
                raise UpstreamError(504, "upstream-timeout", str(error))
            failure.raiseException()
        return stale

    async def _stale(self, kind: str, method: bytes, uri: bytes, headers: Headers,
                     body: Optional[bytes], code: str) -> Optional[IResponse]:
        producer = BytesProducer(body) if body is not None else None
        try:
            response = await self.local.request(method, uri, headers, producer)
        except Exception:
            self.log.failure("cannot build a stale answer to {uri}", uri=uri)
            return None
        if not self._useful(kind, response):
            return None
        response.headers.setRawHeaders(b"x-cache", [b"STALE"])
        self.health.servedStale(kind, code)
        return response

    @staticmethod
    def _useful(kind: str, response: Any) -> bool:
        """
        Whether a local answer says more than "never seen": then it is
        given; otherwise the device gets upstream's failure.
        """
        if response.code != 200:
            return False
        if kind == "assertion":
            return True
        try:
            document = json.loads(response.body)
        except ValueError:
            return False
        results = document.get("results") if isinstance(document, dict) else None
        if kind == "info":
            return True
        if kind == "find":
            return bool(results)
        for result in results or []:
            if result.get("result") in ("refresh", "install", "download"):
                return True
            if result.get("result") == "fetch-assertions" and result.get("assertion-stream-urls"):
                return True
        return False

    def _learntRecently(self, kind: str, uri: bytes, headers: Headers,
                        body: Optional[ParsedJSON], decoded: bytes) -> bool:
        """
        Whether this very answer to this very call was learnt less than
        L{RELEARN_AFTER} seconds ago; if not, it is noted as learnt now.
        Compared by hash, so the answer is neither parsed nor kept: Python's
        own (64 bits, keyed per process), a quarter of the cost of a
        digest (issue 20).  Two answers that hash alike would at worst
        leave the memory one L{RELEARN_AFTER} older for that call.
        """
        key = hash((kind, uri, *[tuple(headers.getRawHeaders(name) or ())
                                 for name in _LEARNT_HEADERS],
                    body.raw if body is not None else None, decoded))
        now = self.clock.seconds()
        learnt = self._learnt.get(key)
        if learnt is not None and now - learnt < RELEARN_AFTER:
            return True
        if len(self._learnt) >= MAX_LEARNT:
            self._learnt.clear()
        self._learnt[key] = now
        return False

    def _learn(self, kind: str, uri: bytes, headers: Headers, body: Optional[ParsedJSON],
               response: IResponse, raw: bytes) -> Optional[bytes]:
        """
        Learn from a good answer.

        @param body: the request body's shared parse, or C{None}.
        @return: the answer with its C{Content-Encoding} undone, when it
            was decoded here (the relay then need not decode it again).
        """
        if headers.hasHeader(b"authorization"):
            # A user's credentials may show private snaps: what they see is
            # never offered to other devices.
            return None
        known: Optional[bytes] = None
        try:
            codings = contentCodings(response.headers)
            if codings:
                inflater = Inflater(codings, MAX_LEARNED)
                decoded = inflater.feed(raw)
                inflater.finish()
            else:
                decoded = raw
            if len(decoded) > MAX_LEARNED:
                return None
            known = decoded
            if self._learntRecently(kind, uri, headers, body, decoded):
                return decoded
            parts = urlsplit(uri.decode("ascii", "replace")[len(self.base) - 1:])
            if kind == "assertion":
                segments = [unquote(s) for s in parts.path.strip("/").split("/")]
                self.answers.learnAssertion(segments[2], segments[3:], decoded)
                return decoded
            # Parsed for this memory alone: it keeps parts of the answer,
            # which the rules may later amend in the relay's own parse.
            document = json.loads(decoded)
            if kind == "refresh":
                self.answers.learnRefresh(body.value() if body is not None else None,
                                          headers, document)
            elif kind == "info":
                self.answers.learnInfo(document)
            elif kind == "find":
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                self.answers.learnFind(headers, query, document)
        except (EncodingError, ValueError) as error:
            # Learning is best effort: the answer is relayed all the same
            # (and the relay reports what is wrong with it).
            self.log.info("not learning from the answer to {uri}: {error}", uri=uri, error=error)
        except Exception:
            self.log.failure("cannot learn from the answer to {uri}", uri=uri)
        return known
