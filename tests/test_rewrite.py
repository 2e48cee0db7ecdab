"""
Tests for L{snapstore.store.rewrite}.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from snapstore.store.rewrite import RemoteURLs, remoteToken, rewriteAnswer

DIGEST = "ab" * 48
PUBLIC = "http://proxy.example:8000/"


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
