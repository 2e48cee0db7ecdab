"""
snapstore: a self-hosted caching proxy for the Snap Store.
"""

__version__ = "0.2.0"
