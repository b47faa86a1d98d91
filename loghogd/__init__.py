"""loghogd: the LogHog log daemon."""

__version__ = '0.8.0'
