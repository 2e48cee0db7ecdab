# -*- test-case-name: tests.test_admin_rulesaudit -*-
"""
Tests for L{snapstore.admin.rulesaudit}: edits to C{rules.d} (files, the
device limit) reach the audit log when rules are loaded or reloaded.
"""

from __future__ import annotations

import os

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from snapstore.admin.rulesaudit import ACTOR, RulesAuditService
from snapstore.rules.service import RulesService
from tests.test_admin import DEVICE_LIMIT, RunningService


class RulesAuditTests(TestCase):
    """
    A running service with a device-limit rule file.
    """

    @inlineCallbacks
    def setUp(self):
        self.service = yield RunningService(self).start(rules={"20-device-limit.py": DEVICE_LIMIT})
        [self.auditService] = [s for s in self.service.top if isinstance(s, RulesAuditService)]
        [self.rules] = [s for s in self.service.top if isinstance(s, RulesService)]
        yield self.auditService.audited

    @inlineCallbacks
    def rows(self):
        entries = yield self.service.state().listAudit()
        return [e for e in entries if e.action == "rules.change"]

    @inlineCallbacks
    def test_start(self):
        """
        The rules loaded at start are recorded, with the device limit.
        """
        [row] = yield self.rows()
        self.assertEqual(row.actor, ACTOR)
        self.assertIsNone(row.before)
        self.assertEqual(row.after["device-limit"], 25)
        self.assertEqual(list(row.after["files"]), ["20-device-limit.py"])

    @inlineCallbacks
    def test_reload(self):
        """
        A reload after the limit was edited appends a row with both limits;
        a reload with nothing edited appends none.
        """
        path = os.path.join(self.rules.directory, "20-device-limit.py")
        with open(path, "w") as ruleFile:
            ruleFile.write(DEVICE_LIMIT.replace("limit=25", "limit=30"))
        self.assertTrue(self.rules.reload())
        yield self.auditService.auditor.noteRuleSet(self.rules.ruleSet)
        rows = yield self.rows()
        self.assertEqual([(r.before["device-limit"], r.after["device-limit"]) for r in rows[1:]],
                         [(25, 30)])
        self.assertNotEqual(rows[1].before["files"], rows[1].after["files"])
        self.assertTrue(self.rules.reload())
        yield self.auditService.auditor.noteRuleSet(self.rules.ruleSet)
        self.assertEqual(len((yield self.rows())), 2)
        code, out, err = yield self.service.cli("audit")
        self.assertIn("rules.change", out)
