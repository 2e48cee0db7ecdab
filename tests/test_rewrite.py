"""
Tests for L{snapstore.store.rewrite}.
"""

import collections
import hashlib
import json
import posixpath
import re
from urllib.parse import quote, urlsplit

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

from snapstore.http.bodies import BytesProducer
from snapstore.state.records import BlobRecord
from snapstore.store import rewrite
from snapstore.store.rewrite import RemoteURLs, remoteToken, rewriteAnswer
from tests.fakestore import FakeStore
from tests.helpers import deferred, testAgent

DIGEST = "ab" * 48
PUBLIC = "http://proxy.example:8000/"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")


def refreshAnswer():
    return {
        "results": [
            {
                "result": "refresh",
                "instance-key": "SNAPID" + "x" * 26,
                "snap-id": "SNAPID" + "x" * 26,
                "name": "hello",
                "snap": {
                    "snap-id": "SNAPID" + "x" * 26,
                    "name": "hello",
                    "revision": 29,
                    "architectures": ["amd64"],
                    "website": "https://api.snapcraft.io/api/v1/snaps/download/elsewhere",
                    "download": {
                        "url": "https://api.snapcraft.io/api/v1/snaps/download/SNAPID" + "x" * 26 + "_29.snap",
                        "size": 20480,
                        "sha3-384": DIGEST,
                        "deltas": [
                            {"format": "xdelta3", "source": 28, "target": 29, "size": 99,
                             "sha3-384": "cd" * 48,
                             "url": "https://api.snapcraft.io/api/v1/snaps/download/SNAPID" + "x" * 26 + "_28_29_xdelta3.delta"}
                        ],
                    },
                    "media": [{"type": "icon", "url": "https://dashboard.snapcraft.io/site_media/appmedia/icon.png"}],
                    "resources": [
                        {"name": "comp", "revision": 3, "type": "component/test",
                         "download": {"url": "https://cdn.example/res/comp_3.comp", "size": 5, "sha3-384": "ef" * 48}}
                    ],
                },
            },
            {"result": "fetch-assertions", "key": "g1",
             "assertion-stream-urls": ["https://api.snapcraft.io/v2/assertions/snap-declaration/16/abc?max-format=7"]},
        ]
    }


class RewriteAnswerTests(SynchronousTestCase):
    """
    Tests for L{rewriteAnswer}.
    """

    def test_downloadURLsPointAtProxy(self):
        """
        Blob, delta and resource URLs become C{/api/v1/snaps/download/<name>}
        under the public base; assertion stream URLs keep their API path.
        """
        body = json.dumps(refreshAnswer()).encode()
        result = json.loads(rewriteAnswer(body, PUBLIC).body)
        snap = result["results"][0]["snap"]
        snapFile = "SNAPID" + "x" * 26
        self.assertEqual(snap["download"]["url"], PUBLIC + f"api/v1/snaps/download/{snapFile}_29.snap")
        self.assertEqual(snap["download"]["deltas"][0]["url"],
                         PUBLIC + f"api/v1/snaps/download/{snapFile}_28_29_xdelta3.delta")
        self.assertEqual(snap["resources"][0]["download"]["url"],
                         PUBLIC + "api/v1/snaps/download/comp_3.comp")
        self.assertEqual(result["results"][1]["assertion-stream-urls"],
                         [PUBLIC + "v2/assertions/snap-declaration/16/abc?max-format=7"])

    def test_iconsBecomeRemoteTokens(self):
        """
        Icon URLs on other hosts are served through an opaque token that only
        the store's own answer can create.
        """
        icon = "https://dashboard.snapcraft.io/site_media/appmedia/icon.png"
        rewritten = rewriteAnswer(json.dumps(refreshAnswer()).encode(), PUBLIC)
        media = json.loads(rewritten.body)["results"][0]["snap"]["media"][0]
        token = remoteToken(icon)
        self.assertEqual(media["url"], PUBLIC + f"snapstore/remote/{token}/icon.png")
        self.assertEqual(rewritten.remotes, {token: icon})

    def test_otherBytesUntouched(self):
        """
        Only URL tokens change: the formatting of the answer and fields that
        are not fetched by snapd (C{website}) stay as upstream wrote them.
        """
        body = json.dumps(refreshAnswer(), indent=3, sort_keys=True).encode()
        rewritten = rewriteAnswer(body, PUBLIC).body
        self.assertIn(b'"website": "https://api.snapcraft.io/api/v1/snaps/download/elsewhere"', rewritten)
        self.assertIn(b'\n   "results": [', rewritten)
        original = refreshAnswer()
        back = json.loads(rewritten)
        back["results"][0]["snap"]["download"] = original["results"][0]["snap"]["download"]
        self.assertEqual(back["results"][0]["snap"]["website"], original["results"][0]["snap"]["website"])

    def test_escapedSlashes(self):
        """
        URLs written with escaped slashes (C{\\/}), as some encoders do, are
        rewritten too.
        """
        body = json.dumps(refreshAnswer()).replace("/", "\\/").encode()
        result = json.loads(rewriteAnswer(body, PUBLIC).body)
        self.assertTrue(result["results"][0]["snap"]["download"]["url"].startswith(PUBLIC))

    def test_blobRecords(self):
        """
        Every blob with a digest and size is described for the state store,
        with the snap identity of the object that holds it.
        """
        records = {record.name: record for record in
                   rewriteAnswer(json.dumps(refreshAnswer()).encode(), PUBLIC, seenAt=7.0).blobs}
        snapFile = "SNAPID" + "x" * 26 + "_29.snap"
        main = records[snapFile]
        self.assertEqual((main.sha3_384, main.size, main.revision, main.snapName, main.architectures, main.seenAt),
                         (DIGEST, 20480, 29, "hello", ("amd64",), 7.0))
        self.assertEqual(main.url, "https://api.snapcraft.io/api/v1/snaps/download/" + snapFile)
        delta = records["SNAPID" + "x" * 26 + "_28_29_xdelta3.delta"]
        self.assertEqual((delta.revision, delta.size), (0, 99))
        self.assertEqual(sorted(records), sorted([snapFile, "SNAPID" + "x" * 26 + "_28_29_xdelta3.delta", "comp_3.comp"]))

    def test_infoChannelMap(self):
        """
        Channel-map entries of C{info} answers take the snap identity from
        the top of the answer and the architecture from their channel.
        """
        answer = {"name": "hello", "snap-id": "I" * 32, "snap": {"name": "hello"},
                  "channel-map": [{"channel": {"architecture": "arm64", "name": "stable"}, "revision": 5,
                                   "download": {"url": "https://x/api/v1/snaps/download/" + "I" * 32 + "_5.snap",
                                                "size": 1, "sha3-384": DIGEST}}]}
        [record] = rewriteAnswer(json.dumps(answer).encode(), PUBLIC).blobs
        self.assertEqual((record.snapId, record.snapName, record.revision, record.architectures),
                         ("I" * 32, "hello", 5, ("arm64",)))

    def test_notJSON(self):
        """
        An answer that is not JSON is refused, so the relay can report a
        broken upstream instead of passing on garbage.
        """
        self.assertRaises(ValueError, rewriteAnswer, b"<html>oops", PUBLIC)


class RemoteURLsTests(SynchronousTestCase):
    """
    Tests for L{RemoteURLs}.
    """

    def test_bounded(self):
        """
        The oldest tokens are forgotten first once the bound is reached.
        """
        urls = RemoteURLs(limit=2)
        urls.update({"a": "A"})
        urls.update({"b": "B"})
        urls.update({"c": "C"})
        self.assertEqual((urls.get("a"), urls.get("b"), urls.get("c")), (None, "B", "C"))


# -- the rewrite as it was before issue 20's fourth round -----------------
#
# Kept as the reference the faster rewrite must match on every answer of
# the fake store: it visited every object of the answer, carrying the snap
# identity down, and looked for every URL in all three of its encodings.


class _ReferenceRewriter:
    def __init__(self, publicBase, seenAt):
        self.publicBase = publicBase
        self.seenAt = seenAt
        self.replacements = {}
        self.blobs = {}
        self.remotes = {}

    def apiURL(self, url):
        parts = urlsplit(url)
        match = re.compile(r"/(v2/|api/v1/)").search(parts.path)
        if parts.scheme in ("http", "https") and match is not None:
            local = self.publicBase + parts.path[match.start() + 1:]
            if parts.query:
                local += "?" + parts.query
        else:
            local = self.remoteURL(url)
        self.replacements[url] = local
        return local

    def remoteURL(self, url):
        token = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
        self.remotes[token] = url
        name = posixpath.basename(urlsplit(url).path)
        if not SAFE_NAME.match(name):
            name = "file"
        return f"{self.publicBase}snapstore/remote/{token}/{quote(name)}"

    def downloadURL(self, url, download, context):
        name = posixpath.basename(urlsplit(url).path)
        digest = download.get("sha3-384")
        size = download.get("size")
        if not isinstance(digest, str) or not isinstance(size, int):
            return self.apiURL(url)
        if not SAFE_NAME.match(name):
            name = f"{digest[:32]}.blob"
        local = self.publicBase + "api/v1/snaps/download/" + quote(name)
        self.replacements[url] = local
        self.blobs[name] = BlobRecord(
            name=name, sha3_384=digest.lower(), size=size, url=url,
            snapId=_text(context.get("snap-id")), snapName=_text(context.get("name")),
            revision=_int(context.get("revision")),
            architectures=tuple(a for a in context.get("architectures") or () if isinstance(a, str)),
            seenAt=self.seenAt)
        return local


def _int(value):
    return value if isinstance(value, int) else 0


def _text(value):
    return value if isinstance(value, str) else ""


def _referenceWalk(node, context, rewriter):
    if isinstance(node, list):
        for item in node:
            _referenceWalk(item, context, rewriter)
        return
    if not isinstance(node, dict):
        return
    context = dict(context)
    for key in ("snap-id", "name", "revision"):
        value = node.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            context[key] = value
    if isinstance(node.get("architectures"), list):
        context["architectures"] = node["architectures"]
    channel = node.get("channel")
    if isinstance(channel, dict) and isinstance(channel.get("architecture"), str):
        context.setdefault("architectures", [channel["architecture"]])
    download = node.get("download")
    if isinstance(download, dict):
        if isinstance(download.get("url"), str) and download["url"]:
            rewriter.downloadURL(download["url"], download, context)
        for delta in download.get("deltas") or ():
            if isinstance(delta, dict) and isinstance(delta.get("url"), str):
                rewriter.downloadURL(delta["url"], delta, dict(context, revision=0))
    for item in node.get("media") or ():
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            rewriter.replacements[item["url"]] = rewriter.remoteURL(item["url"])
    for url in node.get("assertion-stream-urls") or ():
        if isinstance(url, str):
            rewriter.apiURL(url)
    for key, value in node.items():
        if key not in ("download", "media") and isinstance(value, (dict, list)):
            _referenceWalk(value, context, rewriter)


def referenceRewrite(body, publicBase, seenAt=0.0, document=None):
    """
    What L{rewriteAnswer} answered before it was made cheaper: the body,
    the blob records and the remote URLs.
    """
    if document is None:
        document = json.loads(body)
    rewriter = _ReferenceRewriter(publicBase, seenAt)
    _referenceWalk(document, {}, rewriter)
    rewritten = body
    for original in sorted(rewriter.replacements, key=len, reverse=True):
        replacement = json.dumps(rewriter.replacements[original]).encode("utf-8")
        plain = json.dumps(original).encode("utf-8")
        encodings = [plain, plain.replace(b"/", b"\\/"),
                     json.dumps(original, ensure_ascii=False).encode("utf-8")]
        for encoded in encodings:
            rewritten = rewritten.replace(encoded, replacement)
    return rewritten, tuple(rewriter.blobs.values()), dict(rewriter.remotes)


def variants(document, body=None):
    """
    The encodings of one answer the rewrite must handle alike: as sent,
    re-encoded compactly, with escaped slashes, with non-ASCII characters
    as they are, indented with sorted keys.
    """
    if body is not None:
        yield "as sent", body
    yield "compact", json.dumps(document, separators=(",", ":")).encode()
    yield "escaped slashes", json.dumps(document).replace("/", "\\/").encode()
    yield "unicode as is", json.dumps(document, ensure_ascii=False).encode("utf-8")
    yield "indented", json.dumps(document, indent=2, sort_keys=True).encode()


class EqualsReferenceMixin:
    """
    Compare L{rewriteAnswer} with L{referenceRewrite}.
    """

    def assertAsReference(self, body, document=None, label=""):
        expected = referenceRewrite(body, PUBLIC, 5.0, document)
        got = rewriteAnswer(body, PUBLIC, 5.0, document)
        self.assertEqual((got.body, got.blobs, got.remotes), expected, label)
        return got


class FakeStoreCorpusTests(EqualsReferenceMixin, TestCase):
    """
    Every kind of answer the fake store gives (refresh with installs,
    refreshes, deltas and assertion streams; info; find; the v1 catalogue)
    is rewritten as the reference rewrite did, in every encoding, and
    amended (as the rules amend: a changed document re-encoded).
    """

    timeout = 60

    async def answers(self):
        store = FakeStore(reactor, deltas=True)
        store.addSnap("hello", summary="Grüße, \u2603 \"quoted\" <b>&</b>",
                      description="ünïcödé\nline two \\ backslash / slash")
        for revision in (1, 2, 3):
            store.addRevision("hello", revision, 2000 + revision, architectures=("amd64", "arm64"))
        store.addSnap("other", categories=("featured",))
        store.addRevision("other", 7, 3000)
        await store.startFor(self)
        agent = testAgent(self)
        headers = Headers({b"snap-device-series": [b"16"], b"snap-device-architecture": [b"amd64"],
                           b"snap-accept-delta-format": [b"xdelta3"],
                           b"content-type": [b"application/json"]})
        helloId = store.snapId("hello")
        refresh = {
            "context": [{"snap-id": helloId, "instance-key": "k1", "revision": 1,
                         "tracking-channel": "stable", "epoch": {"read": [0], "write": [0]}}],
            "actions": [
                {"action": "refresh", "instance-key": "k1", "snap-id": helloId},
                {"action": "install", "instance-key": "k2", "name": "other", "channel": "stable"},
                {"action": "download", "instance-key": "k3", "name": "hello", "channel": "stable"},
                {"action": "fetch-assertions", "key": "g1", "assertions": [
                    {"type": "snap-declaration", "primary-key": ["16", helloId]}]},
            ],
        }
        calls = [(b"POST", "v2/snaps/refresh", refresh),
                 (b"GET", "v2/snaps/info/hello", None),
                 (b"GET", "v2/snaps/find?q=hello", None),
                 (b"GET", "v2/snaps/find?q=", None),
                 (b"GET", "api/v1/snaps/names", None),
                 (b"GET", "api/v1/snaps/search?q=hello", None)]
        answers = []
        for method, path, body in calls:
            producer = BytesProducer(json.dumps(body).encode()) if body is not None else None
            response = await agent.request(method, (store.apiURL + path).encode(), headers,
                                           producer)
            raw = await readBody(response)
            self.assertEqual(response.code, 200, raw)
            answers.append((path, raw))
        return answers

    @deferred
    async def test_corpus(self):
        """
        Each answer in each encoding: the same bytes, blob records and
        remote URLs as the reference.
        """
        answers = await self.answers()
        kinds = set()
        for path, raw in answers:
            document = json.loads(raw)
            for label, body in variants(document, raw):
                got = self.assertAsReference(body, None, f"{path} {label}")
                kinds.update(blob.name.rsplit(".", 1)[-1] for blob in got.blobs)
                if got.remotes:
                    kinds.add("icon")
                if b"/v2/assertions/" in got.body:
                    kinds.add("assertions")
        # The corpus covers every kind of URL the rewrite handles.
        self.assertEqual(kinds, {"snap", "delta", "icon", "assertions"})

    @deferred
    async def test_amended(self):
        """
        An amended answer (a result dropped, one changed) is re-encoded by
        the relay and rewritten from its document, as before.
        """
        for path, raw in await self.answers():
            document = json.loads(raw)
            if isinstance(document.get("results"), list) and document["results"]:
                amended = dict(document, results=document["results"][1:] + [
                    dict(document["results"][0], note="amended")])
            else:
                amended = dict(document, amended=True)
            body = json.dumps(amended).encode()
            self.assertAsReference(body, amended, path)
            self.assertAsReference(body, collections.OrderedDict(amended), path)


class ShapesTests(EqualsReferenceMixin, SynchronousTestCase):
    """
    Answers shaped unlike the fake store's still get the reference's
    rewrite.
    """

    def test_refreshShapes(self):
        """
        The refresh answer of this module's tests (deltas, resources,
        assertion streams), in every encoding.
        """
        document = refreshAnswer()
        for label, body in variants(document):
            self.assertAsReference(body, None, label)

    def test_duplicates(self):
        """
        A URL found twice (the same blob in two results, a download URL
        repeated in a field snapd does not fetch) is replaced wherever it
        is, as before; a URL that is a prefix of another is not replaced
        inside it.
        """
        document = refreshAnswer()
        first = document["results"][0]
        url = first["snap"]["download"]["url"]
        first["snap"]["website"] = url
        document["results"].append(json.loads(json.dumps(first)))
        document["results"][-1]["snap"]["download"]["url"] = url + ".sig"
        document["results"][-1]["snap"]["download"]["deltas"] = []
        for label, body in variants(document):
            self.assertAsReference(body, None, label)

    def test_oddURLs(self):
        """
        URLs with quotes, backslashes, controls or non-ASCII characters,
        unsafe file names, URLs that are not the store's API, and downloads
        without a digest or size.
        """
        answer = {"results": [
            {"name": "odd", "snap-id": "o" * 32, "revision": 4, "snap": {
                "download": {"url": "https://cdn.example/ünï/cödé_4.snap", "size": 1,
                             "sha3-384": "AB" * 48},
                "media": [{"url": 'https://cdn.example/a"b\\c\td.png'},
                          {"url": "https://cdn.example/"}, {"type": "no url"}, "not an object"],
            }},
            {"name": "undigested", "channel": {"architecture": "s390x"}, "snap": {
                "download": {"url": "https://api.example/api/v1/snaps/download/x_1.snap?t=1"},
                "resources": [[{"download": {"url": "ftp://elsewhere/x", "size": 2,
                                             "sha3-384": DIGEST}}]],
            }},
            {"result": "fetch-assertions", "assertion-stream-urls": [
                "https://api.example/v2/assertions/account/x", "mailto:someone", 7]},
        ], "architectures": ["riscv64", 5, None]}
        for label, body in variants(answer):
            self.assertAsReference(body, None, label)

    def test_notObjects(self):
        """
        Answers that are not objects, or hold nothing to rewrite.
        """
        for document in ([], [[{"download": {"url": "https://x/y.snap", "size": 1, "sha3-384": DIGEST}}]],
                         "text", 3, None, {"results": []}, {"media": {"url": "https://x/i.png"}}):
            for label, body in variants(document):
                self.assertAsReference(body, None, label)


class RewriteCostTests(SynchronousTestCase):
    """
    A fleet's answers name the same URLs again and again: what a URL
    becomes is worked out once, not per answer.
    """

    def test_urlsSplitOnce(self):
        """
        Rewriting the same answer again splits none of its URLs again.
        """
        calls = []

        def counting(url, *args, **kwargs):
            calls.append(url)
            return urlsplit(url, *args, **kwargs)

        self.patch(rewrite, "urlsplit", counting)
        answer = refreshAnswer()
        answer["results"][0]["snap"]["media"][0]["url"] += "?unique-to-this-test"
        body = json.dumps(answer).encode()
        first = rewriteAnswer(body, PUBLIC, 1.0)
        self.assertTrue(calls)
        del calls[:]
        second = rewriteAnswer(body, "http://other.example/", 2.0)
        self.assertEqual(calls, [])
        self.assertEqual([blob.seenAt for blob in second.blobs], [2.0] * len(first.blobs))
        self.assertIn(b'"http://other.example/api/v1/snaps/download/', second.body)
