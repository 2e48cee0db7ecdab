"""
What every listener shares: head parsing, header hygiene, the guarded
site, the store-format error writer, endpoint descriptions, TLS files.
See docs/architecture.md.
"""
