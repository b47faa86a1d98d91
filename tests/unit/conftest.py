"""Fixtures the unit tests share."""

import os
import time

import pytest


@pytest.fixture
def zone():
    """Set the local time zone for one test (TZ + tzset), and restore it afterwards."""
    saved = os.environ.get('TZ')

    def set_zone(name):
        os.environ['TZ'] = name
        time.tzset()
    yield set_zone
    if saved is None:
        os.environ.pop('TZ', None)
    else:
        os.environ['TZ'] = saved
    time.tzset()
