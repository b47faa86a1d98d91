"""LogHog client: a logging handler and a command that send log records to loghogd.

    import logging
    from loghog import LoghogHandler
    logging.getLogger().addHandler(LoghogHandler('my-first-app'))

``loghog.handler`` holds the handler, ``loghog.sender`` the delivery engine (its bounded
queue and background thread, shared with the command), ``loghog.acks`` the bookkeeping of
acknowledgements, ``loghog.gaps`` that of dropped records, ``loghog.transport`` the
connections, ``loghog.wire`` the wire format (shared with loghogd) and ``loghog.cli`` the
``loghog`` command.
"""

from loghog.handler import LoghogHandler

__all__ = ['LoghogHandler']
