"""
Observation used by every listener: metrics, access logs, log format.
It knows no feature.  See docs/architecture.md.
"""
