"""
The front page and the operator's guide link to each other by relative paths
and C{#anchors}. A heading renamed or a section moved to another page breaks
such links silently (GitHub shows the page and stays at its top), so these
tests resolve every one of them the way GitHub does.
"""

import os
import re

from twisted.trial.unittest import TestCase

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(CHECKOUT, "docs")
SCREENSHOTS = os.path.join(DOCS, "screenshots")

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")


def guidePages():
    """
    The files whose links are checked: the front page and every page under
    C{docs/}.
    """
    pages = [os.path.join(CHECKOUT, "README.md")]
    pages += sorted(os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))
    return pages


def proseLines(path):
    """
    Yield C{(number, line)} for the lines of a Markdown file that are
    rendered as text: fenced and indented code blocks are skipped, since a
    C{# comment} in a shell example is not a heading and C{[--admin URL]}
    in a usage line is not a link.
    """
    fenced = False
    previousBlank = True
    inIndentedBlock = False
    with open(path, encoding="utf-8") as markdown:
        for number, line in enumerate(markdown, 1):
            line = line.rstrip("\n")
            if _FENCE.match(line):
                fenced = not fenced
                continue
            if fenced:
                continue
            blank = not line.strip()
            if line.startswith("    ") and (previousBlank or inIndentedBlock) and not _listContinuation(line):
                inIndentedBlock = True
                previousBlank = blank
                continue
            if not blank:
                inIndentedBlock = False
            previousBlank = blank
            yield number, line


def _listContinuation(line):
    """
    An indented line that continues a list item (C{"  - ..."} nested, or
    wrapped text under C{"- "}) is prose, not code. The guide indents code
    blocks by four spaces after a blank line and never nests lists that
    deep, so a line whose indented text starts a list item is prose.
    """
    return bool(re.match(r"\s{4,}([-*+]|\d+\.)\s", line))


def slug(heading):
    """
    The anchor GitHub gives a heading: the rendered text lower-cased, every
    character that is not a letter, digit, C{-}, C{_} or space dropped, and
    each space made a C{-}.
    """
    text = _LINK.sub(lambda match: match.group(1), heading)
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def anchors(path):
    """
    Every anchor of a Markdown file, with GitHub's C{-1}, C{-2} suffixes for
    headings that repeat.
    """
    seen = {}
    result = set()
    for _, line in proseLines(path):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path):
    """
    Yield C{(number, target)} for every link and image of a Markdown file,
    inline or reference-style, outside code.
    """
    for number, line in proseLines(path):
        definition = _DEFINITION.match(line)
        if definition:
            yield number, definition.group(1)
            continue
        text = _CODE_SPAN.sub("", line)
        for match in _LINK.finditer(text):
            yield number, match.group(2)


def brokenLinks(path, anchorsOf):
    """
    The relative links of C{path} that do not resolve, as messages naming
    the file and line: a missing file, or an anchor its target page lacks.
    Links with a scheme (C{https:}, C{mailto:}) are not followed.
    """
    problems = []
    here = os.path.dirname(path)
    name = os.path.relpath(path, CHECKOUT)
    for number, target in links(path):
        if not target or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue
        filePart, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(here, filePart)) if filePart else path
        if filePart and _awaitingScreenshots(resolved):
            continue
        if not os.path.exists(resolved):
            problems.append(f"{name}:{number}: {target}: no such file")
            continue
        if anchor:
            if not resolved.endswith(".md"):
                problems.append(f"{name}:{number}: {target}: an anchor into a file that is not Markdown")
            elif anchor not in anchorsOf(resolved):
                problems.append(f"{name}:{number}: {target}: no heading with that anchor")
    return problems


def _awaitingScreenshots(resolved):
    """
    The dashboard screenshots are written by the browser tests of issue 19
    into C{docs/screenshots/}; until that directory exists in the tree, the
    guide's links to it are not checked. Once it exists, every link into it
    must resolve like any other.
    """
    return resolved.startswith(SCREENSHOTS + os.sep) and not os.path.isdir(SCREENSHOTS)


class SlugTests(TestCase):
    """
    The anchors are computed as GitHub computes them; otherwise the link
    check would accept links GitHub does not follow.
    """

    def test_headings(self):
        self.assertEqual(slug("Install on Debian/Ubuntu"), "install-on-debianubuntu")
        self.assertEqual(slug("The `snapstore` command"), "the-snapstore-command")
        self.assertEqual(slug("Brand stores and test keys: `--trusted-keys`"),
                         "brand-stores-and-test-keys---trusted-keys")
        self.assertEqual(slug("1. Export on the connected node"), "1-export-on-the-connected-node")
        self.assertEqual(slug("Relay cost per request (issue 20): before and after"),
                         "relay-cost-per-request-issue-20-before-and-after")

    def test_repeatedHeadings(self):
        path = self.mktemp() + ".md"
        with open(path, "w") as page:
            page.write("# Guide\n\n## Tests\n\n```sh\n# not a heading\n```\n\n## Tests\n")
        self.assertEqual(anchors(path), {"guide", "tests", "tests-1"})

    def test_brokenLinksFound(self):
        """
        The check reports a missing file and a missing anchor, and ignores
        links in code and links with a scheme.
        """
        path = os.path.join(CHECKOUT, "docs", "architecture.md")
        page = self.mktemp() + ".md"
        with open(page, "w") as markdown:
            markdown.write(
                "# Page\n\n"
                f"[ok]({path}#rooms) [self](#page) [web](https://example.com/x#y)\n"
                f"[gone]({path}#no-such-heading) [missing](no-such-file.md)\n"
                "`[code](nowhere.md)`\n\n"
                "    [indented](nowhere.md)\n"
            )
        problems = brokenLinks(page, anchors)
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("no-such-heading: no heading with that anchor", problems[0])
        self.assertIn("no-such-file.md: no such file", problems[1])


class GuideLinkTests(TestCase):
    """
    README.md and docs/*.md link only to files and headings that exist.
    """

    def test_everyLinkResolves(self):
        cache = {}

        def anchorsOf(path):
            if path not in cache:
                cache[path] = anchors(path)
            return cache[path]

        problems = []
        for page in guidePages():
            problems += brokenLinks(page, anchorsOf)
        self.assertEqual(problems, [])

    def test_everyPageInTheContents(self):
        """
        The guide's table of contents (docs/README.md) and the front page
        lead to every page of the guide, so no page is found only by
        accident.
        """
        contents = os.path.join(DOCS, "README.md")
        linked = set()
        for page in (contents, os.path.join(CHECKOUT, "README.md")):
            for _, target in links(page):
                filePart = target.partition("#")[0]
                if filePart:
                    linked.add(os.path.normpath(os.path.join(os.path.dirname(page), filePart)))
        pages = {page for page in guidePages() if os.path.dirname(page) == DOCS}
        self.assertEqual(sorted(pages - linked - {contents}), [])
