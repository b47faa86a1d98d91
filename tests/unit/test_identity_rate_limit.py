"""rate_limit (ratelimit.py): parsing, token buckets, the throttle of waiting connections,
and how facilities share buckets."""

import pytest

from loghogd.errors import ConfigError
from loghogd.facilities import load_facilities
from loghogd.ratelimit import RateLimits, Throttle, TokenBucket, parse_rate_limit


@pytest.mark.parametrize('text, per_s, burst', [
    ('1000/s', 1000.0, 1000),
    ('1000/s burst 5000', 1000.0, 5000),
    (' 2.5 / sec  burst 3 ', 2.5, 3),
    ('600/min', 10.0, 10),
    ('1/min burst 5', 1 / 60, 5),
    ('1/m', 1 / 60, 1),
])
def test_rates_parse(text, per_s, burst):
    limit = parse_rate_limit(text)
    assert (limit.per_s, limit.burst) == (pytest.approx(per_s), burst)


@pytest.mark.parametrize('text', ['1000', '1000/h', 'fast', '0/s', '10/s burst 0',
                                  '10/s burst', '-1/s'])
def test_bad_rates_say_what_is_expected(text):
    with pytest.raises(ValueError):
        parse_rate_limit(text)


def test_empty_means_no_limit():
    assert parse_rate_limit('') is None


class Limited:
    def __init__(self, text, key=('app', 'root')):
        self.rate_limit = parse_rate_limit(text)
        self.rate_key = key


def test_a_bucket_refills_at_its_rate_up_to_its_burst_and_may_go_into_debt():
    bucket = TokenBucket(parse_rate_limit('10/s burst 20'), now=100.0)
    assert bucket.tokens == 20
    bucket.tokens -= 30            # a stream's read took 30: 10 in debt
    assert bucket.ready_at(100.0) == pytest.approx(101.0)
    bucket.refill(100.5)
    assert bucket.tokens == pytest.approx(-5)
    bucket.refill(200.0)
    assert bucket.tokens == 20     # never above the burst
    bucket.refill(150.0)           # the clock went back: nothing added, nothing taken
    assert bucket.tokens == 20


def test_buckets_are_per_declaring_facility_and_follow_a_reload():
    limits = RateLimits()
    root = Limited('10/s')
    child = Limited('10/s')            # inherited: the same key, the same bucket
    own = Limited('5/s', ('app', 'web'))
    assert limits.bucket(root, 0.0) is limits.bucket(child, 0.0)
    assert limits.bucket(own, 0.0) is not limits.bucket(root, 0.0)
    limits.bucket(root, 0.0).tokens = 8
    reloaded = Limited('100/s burst 3')
    bucket = limits.bucket(reloaded, 0.0)
    assert (bucket.per_s, bucket.burst, bucket.tokens) == (100.0, 3, 3)
    assert limits.bucket(Limited(''), 0.0) is None


class Connection:
    def __init__(self):
        self.paused = False

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False


def test_the_throttle_resumes_a_connection_when_its_bucket_is_back_to_zero():
    throttle = Throttle()
    bucket = TokenBucket(parse_rate_limit('10/s'), now=0.0)
    bucket.tokens = -5
    first, second = Connection(), Connection()
    assert throttle.pause(first, bucket, 0.0) == pytest.approx(0.5)
    assert first.paused and throttle.next_deadline() == pytest.approx(0.5)
    throttle.tick(0.4)
    assert first.paused
    throttle.tick(0.5)
    assert not first.paused and throttle.next_deadline() is None
    # Overdrawn again by another connection of the app while one waited: it waits longer.
    bucket.tokens = -5
    throttle.pause(first, bucket, 0.5)
    bucket.tokens -= 10
    throttle.pause(second, bucket, 0.5)
    throttle.tick(1.0)
    assert first.paused and second.paused
    throttle.tick(2.0)
    assert not first.paused and not second.paused
    assert throttle.status(2.0) == {'paused_connections': 0}


def test_a_closed_connection_is_forgotten():
    throttle = Throttle()
    bucket = TokenBucket(parse_rate_limit('1/s'), now=0.0)
    bucket.tokens = -1
    gone = Connection()
    throttle.pause(gone, bucket, 0.0)
    throttle.forget(gone)
    throttle.tick(5.0)
    assert gone.paused and len(throttle) == 0   # never resumed: it is closed


def test_sub_facilities_share_their_apps_bucket_unless_they_set_their_own(tmp_path):
    path = tmp_path / 'facilities.conf'
    path.write_text("""
[noisy]
rotate = daily
backup_count = 3
rate_limit = 100/s burst 500
[noisy:web]
rotate = daily
backup_count = 3
[noisy:batch]
rotate = daily
backup_count = 3
rate_limit = 10/s
[quiet]
rotate = daily
backup_count = 3
""")
    table = load_facilities(str(path))
    root, web, batch = (table.lookup('noisy', m) for m in ('root', 'web', 'batch'))
    assert root.rate_key == web.rate_key == ('noisy', 'root')
    assert web.rate_limit.burst == 500
    assert batch.rate_key == ('noisy', 'batch') and batch.rate_limit.per_s == 10
    assert table.lookup('quiet', 'root').rate_limit is None


def test_a_bad_rate_is_a_config_error_naming_file_and_line(tmp_path):
    path = tmp_path / 'facilities.conf'
    path.write_text('[app]\nrotate = daily\nbackup_count = 3\nrate_limit = lots\n')
    with pytest.raises(ConfigError) as info:
        load_facilities(str(path))
    (error,) = info.value.errors
    assert 'facilities.conf:4' in error and 'rate_limit' in error
