"""
Tests for C{scripts/check-layers}: the import rules of docs/architecture.md.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import textwrap

from twisted.trial.unittest import SynchronousTestCase

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _loadChecker():
    path = os.path.join(CHECKOUT, "scripts", "check-layers")
    loader = importlib.machinery.SourceFileLoader("check_layers", path)
    spec = importlib.util.spec_from_loader("check_layers", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


checker = _loadChecker()

ROOMS = """\
<!-- rooms -->
| Room | Holds | May import |
|------|-------|------------|
| `core` | `snapstore/__init__.py` | — |
| `low` | `snapstore/low/` | `core` |
| `high` | `snapstore/high/` | `core`, `low` |
| `tap` | `snapstore/tap.py` | `*` |
<!-- /rooms -->
"""


class CheckLayersTests(SynchronousTestCase):
    def tree(self, files: dict[str, str]) -> tuple[str, str]:
        root = self.mktemp()
        for name, text in files.items():
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as source:
                source.write(textwrap.dedent(text))
        document = os.path.join(root, "docs", "architecture.md")
        os.makedirs(os.path.dirname(document))
        with open(document, "w") as text:
            text.write(ROOMS)
        return root, document

    def test_thisCheckout(self) -> None:
        """
        The imports of this checkout follow its docs/architecture.md.
        """
        self.assertEqual(checker.check(), [])

    def test_allowedArrow(self) -> None:
        root, document = self.tree({
            "snapstore/__init__.py": "",
            "snapstore/low/__init__.py": "",
            "snapstore/low/a.py": "X = 1\n",
            "snapstore/high/__init__.py": "",
            "snapstore/high/b.py": "from snapstore.low.a import X\n",
            "snapstore/tap.py": "import snapstore.high.b\n",
        })
        self.assertEqual(checker.check(root, document), [])

    def test_forbiddenFunctionLevelArrow(self) -> None:
        """
        An import inside a function that points up the table is reported.
        """
        root, document = self.tree({
            "snapstore/__init__.py": "",
            "snapstore/low/__init__.py": "",
            "snapstore/low/a.py": """
                def f():
                    from snapstore.high import b
                    return b
            """,
            "snapstore/high/__init__.py": "",
            "snapstore/high/b.py": "",
        })
        [problem] = checker.check(root, document)
        self.assertIn("snapstore.low.a (low) imports snapstore.high.b (high)", problem)

    def test_nothingImportsTap(self) -> None:
        root, document = self.tree({
            "snapstore/__init__.py": "",
            "snapstore/high/__init__.py": "",
            "snapstore/high/b.py": "from snapstore import tap\n",
            "snapstore/tap.py": "",
        })
        [problem] = checker.check(root, document)
        self.assertIn("imports snapstore.tap (tap)", problem)

    def test_cycleWithinARoom(self) -> None:
        """
        Modules of one room importing each other (one of them from inside a
        function) are a cycle.
        """
        root, document = self.tree({
            "snapstore/__init__.py": "",
            "snapstore/low/__init__.py": "",
            "snapstore/low/a.py": "from snapstore.low import b\n",
            "snapstore/low/b.py": """
                def g():
                    from snapstore.low.a import f
            """,
        })
        self.assertEqual(checker.check(root, document),
                         ["import cycle: snapstore.low.a -> snapstore.low.b"])

    def test_moduleOutsideRooms(self) -> None:
        root, document = self.tree({
            "snapstore/__init__.py": "",
            "snapstore/stray.py": "",
        })
        self.assertEqual(checker.check(root, document),
                         ["snapstore.stray: in no room of docs/architecture.md"])
