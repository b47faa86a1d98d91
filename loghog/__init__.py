"""LogHog client: a logging handler and a command that send log records to loghogd.

    import logging
    from loghog import LoghogHandler
    logging.getLogger().addHandler(LoghogHandler('my-first-app'))

``loghog.handler`` holds the handler, ``loghog.sender`` its background queue and thread,
``loghog.transport`` the connections, ``loghog.wire`` the wire format (shared with loghogd) and
``loghog.cli`` the ``loghog`` command.
"""

from loghog.handler import LoghogHandler

__all__ = ['LoghogHandler']
