# -*- test-case-name: tests.test_state -*-
"""
Exceptions raised by the state store.

They live in their own module so that the HTTP layer can map them to status
codes without importing either database driver.
"""


class StateUnavailable(Exception):
    """
    The state store cannot answer right now: it has not finished starting,
    its database is unreachable, or it was closed.

    Raised (as a failed L{Deferred}) immediately instead of waiting, so that
    a request depending on state is refused quickly with a C{503} and the
    rest of the proxy keeps serving.  The original error, when there is one,
    is chained as C{__cause__}.
    """


class MigrationError(Exception):
    """
    The schema could not be brought to the version this code needs.

    Unlike L{StateUnavailable} this does not heal by retrying: an operator has
    to look at the database.
    """
