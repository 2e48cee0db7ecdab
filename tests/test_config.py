"""
Tests for L{snapstore.config}.
"""

import ipaddress
import os

from twisted.trial.unittest import SynchronousTestCase

from snapstore.config import OPTIONS, ConfigError, buildSettings, parseSize


class ParseSizeTests(SynchronousTestCase):
    """
    Tests for L{parseSize}.
    """

    def test_units(self):
        """
        Binary units with an optional B or iB suffix, any case.
        """
        self.assertEqual([parseSize(text) for text in ("1048576", "500M", "20G", "1k", "2GiB", "3MB")],
                         [1 << 20, 500 << 20, 20 << 30, 1 << 10, 2 << 30, 3 << 20])

    def test_invalid(self):
        """
        Anything else is refused with a hint.
        """
        error = self.assertRaises(ValueError, parseSize, "twenty gigs")
        self.assertIn("500M", str(error))


class BuildSettingsTests(SynchronousTestCase):
    """
    Tests for L{buildSettings}.
    """

    def test_fieldsDeclared(self):
        """
        L{Settings} declares one field per L{OPTIONS} entry (its camelCase
        name), in the same order, and the config file; it is frozen.
        """
        import attrs

        from snapstore.config import Settings

        self.assertEqual([field.name for field in attrs.fields(Settings)],
                         [option.attribute for option in OPTIONS] + ["configFile"])
        settings = buildSettings({})
        self.assertRaises(attrs.exceptions.FrozenInstanceError,
                          setattr, settings, "offline", True)

    def test_defaults(self):
        """
        Without options or file, the defaults of design.md section 3 apply
        and the dependent paths derive from the data directory.
        """
        settings = buildSettings({})
        self.assertEqual(
            (settings.storeEndpoint, settings.proxyEndpoint, settings.adminEndpoint,
             settings.upstream, settings.upstreamProxy, settings.publicUrl, settings.cacheSize,
             settings.proxyConnectPorts, settings.offline),
            ("tcp:8000", "tcp:3128", "tcp:8001:interface=127.0.0.1", "https://api.snapcraft.io/",
             None, None, 20 << 30, (443,), False),
        )
        self.assertEqual(settings.state, "sqlite:" + os.path.abspath("snapstore-data/state.sqlite"))
        self.assertEqual(settings.cacheDir, os.path.abspath("snapstore-data/cache"))
        self.assertIn(ipaddress.ip_network("192.168.0.0/16"), settings.proxyClients)
        self.assertIn(ipaddress.ip_network("127.0.0.0/8"), settings.proxyClients)

    def test_fileThenCommandLine(self):
        """
        The config file overrides defaults; the command line overrides the
        file.
        """
        path = self.mktemp()
        with open(path, "w") as configFile:
            configFile.write("[snapstore]\ncache-size = 500M\nupstream = http://store.lan:9000\n"
                             "proxy-endpoint = none\n")
        settings = buildSettings({"cache-size": "1G"}, path)
        self.assertEqual((settings.cacheSize, settings.upstream, settings.proxyEndpoint),
                         (1 << 30, "http://store.lan:9000/", None))

    def test_urlCredentialsKept(self):
        """
        A parent proxy's C{user:password@} survives parsing.
        """
        settings = buildSettings({"upstream-proxy": "http://user:s3cret@parent.lan:3128"})
        self.assertEqual(settings.upstreamProxy, "http://user:s3cret@parent.lan:3128/")

    def test_unknownKey(self):
        """
        A misspelt key in the file is an error naming the file and the key,
        rather than a setting silently ignored.
        """
        path = self.mktemp()
        with open(path, "w") as configFile:
            configFile.write("[snapstore]\ncache-sise = 500M\n")
        error = self.assertRaises(ConfigError, buildSettings, {}, path)
        self.assertIn("cache-sise", str(error))
        self.assertIn(path, str(error))

    def test_badValueNamesOption(self):
        """
        A value that does not parse is an error naming where it came from.
        """
        error = self.assertRaises(ConfigError, buildSettings, {"upstream": "ftp://x/"})
        self.assertIn("--upstream", str(error))
        error = self.assertRaises(ConfigError, buildSettings, {"proxy-connect-ports": "443,http"})
        self.assertIn("--proxy-connect-ports", str(error))
        error = self.assertRaises(ConfigError, buildSettings, {"state": "mysql://db"})
        self.assertIn("--state", str(error))

    def test_missingFile(self):
        """
        A config file that cannot be read is an error, not an empty config.
        """
        error = self.assertRaises(ConfigError, buildSettings, {}, self.mktemp())
        self.assertIn("cannot read", str(error))

    def test_everyOptionDocumented(self):
        """
        The options table of the operator's guide (docs/install.md,
        "Configuration") names every option, so it stays true as options
        are added.
        """
        guide = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "docs", "install.md")).read()
        for option in OPTIONS:
            self.assertIn(f"| `--{option.name}` |", guide)

    def test_everyOptionHasHelp(self):
        """
        Each option explains itself in C{--help}.
        """
        for option in OPTIONS:
            self.assertTrue(len(option.help) > 10, option.name)
