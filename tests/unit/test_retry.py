from datetime import datetime, timedelta, timezone

import pytest

from shared.core.retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

NO_JITTER = RetryPolicy(jitter=0.0)


def test_defaults():
    p = RetryPolicy()
    assert (p.max_attempts, p.base_delay, p.max_delay, p.jitter, p.max_retry_after) == (
        4, 1.0, 30.0, 0.5, 120.0)


@pytest.mark.parametrize("attempt, expected", [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0),
                                               (6, 30.0), (7, 30.0), (1000, 30.0)])
def test_exponential_backoff_capped(attempt, expected):
    assert NO_JITTER.delay(attempt, None, 0.0) == expected


def test_base_delay_scales():
    assert RetryPolicy(base_delay=0.25, jitter=0).delay(3, None, 0.5) == 1.0


@pytest.mark.parametrize("rand, expected", [(0.0, 8.0), (0.5, 6.0), (0.999, 8.0 * (1 - 0.5 * 0.999))])
def test_partial_jitter(rand, expected):
    assert RetryPolicy(jitter=0.5).delay(4, None, rand) == pytest.approx(expected)


def test_full_jitter_spans_zero_to_ceiling():
    full = RetryPolicy(jitter=1.0)
    assert full.delay(4, None, 0.0) == 8.0
    assert full.delay(4, None, 0.75) == pytest.approx(2.0)
    assert 0 < full.delay(4, None, 0.999999) < 0.001


def test_jitter_never_exceeds_the_ceiling():
    policy = RetryPolicy()
    for attempt in range(1, 10):
        ceiling = NO_JITTER.delay(attempt, None, 0.0)
        for i in range(100):
            d = policy.delay(attempt, None, i / 100)
            assert ceiling / 2 < d <= ceiling


@pytest.mark.parametrize("retry_after, expected", [
    (10.0, 10.0),     # above backoff: honoured
    (0.5, 2.0),       # below backoff: backoff wins (it is a floor)
    (0.0, 2.0),
    (45.0, 45.0),     # may exceed max_delay
    (500.0, 120.0),   # capped at max_retry_after
    (float("inf"), 120.0),
    (-5.0, 2.0),      # nonsense is ignored
    (float("nan"), 2.0),
])
def test_retry_after_is_a_capped_floor(retry_after, expected):
    assert NO_JITTER.delay(2, retry_after, 0.0) == expected


def test_retry_after_floor_applies_after_jitter():
    assert RetryPolicy(jitter=1.0).delay(1, 3.0, 0.9) == 3.0


def test_custom_max_retry_after():
    assert RetryPolicy(max_retry_after=5.0).delay(1, 60.0, 0.0) == 5.0


@pytest.mark.parametrize("attempt, rand", [(0, 0.0), (-1, 0.0), (1, 1.0), (1, -0.1)])
def test_delay_rejects_bad_arguments(attempt, rand):
    with pytest.raises(ValueError):
        RetryPolicy().delay(attempt, None, rand)


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"base_delay": -1.0}, {"max_delay": float("inf")}, {"jitter": 1.5},
    {"jitter": -0.1}, {"max_retry_after": float("nan")},
])
def test_policy_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUSES))
def test_retryable_statuses(status):
    assert RetryPolicy().should_retry(1, status=status, connection_error=False)


def test_retryable_set_is_exactly_the_documented_one():
    assert RETRYABLE_STATUSES == {429, 500, 502, 503, 504}


@pytest.mark.parametrize("status", [None, 200, 400, 401, 403, 404, 409, 501, 505])
def test_non_retryable_statuses(status):
    assert not RetryPolicy().should_retry(1, status=status, connection_error=False)


def test_dropped_connection_is_retryable():
    assert RetryPolicy().should_retry(1, status=None, connection_error=True)


@pytest.mark.parametrize("attempt, expected", [(1, True), (2, True), (3, True), (4, False), (9, False)])
def test_retries_stop_at_max_attempts(attempt, expected):
    policy = RetryPolicy(max_attempts=4)
    assert policy.should_retry(attempt, status=503, connection_error=False) is expected
    assert policy.should_retry(attempt, status=None, connection_error=True) is expected


def test_single_attempt_policy_never_retries():
    assert not RetryPolicy(max_attempts=1).should_retry(1, status=503, connection_error=True)


# --- parse_retry_after ------------------------------------------------------------------------

NOW = datetime(2025, 1, 15, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("value, expected", [
    ("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5), ("007", 7.0),
])
def test_delta_seconds(value, expected):
    assert parse_retry_after(value) == expected


@pytest.mark.parametrize("value", [None, "", "   ", "-1", "soon", "1e3", "nan", "inf", "12s", "+5"])
def test_unusable_values(value):
    assert parse_retry_after(value, NOW) is None


def test_http_date():
    assert parse_retry_after("Wed, 15 Jan 2025 12:00:30 GMT", now=NOW) == 30.0


def test_http_date_in_the_past_is_zero():
    assert parse_retry_after("Wed, 15 Jan 2025 11:00:00 GMT", now=NOW) == 0.0


def test_http_date_needs_now():
    assert parse_retry_after("Wed, 15 Jan 2025 12:00:30 GMT") is None


def test_naive_now_is_taken_as_utc():
    assert parse_retry_after("Wed, 15 Jan 2025 12:01:00 GMT", now=NOW.replace(tzinfo=None)) == 60.0


def test_http_date_with_other_now_timezone():
    plus_one = timezone(timedelta(hours=1))
    now = datetime(2025, 1, 15, 13, 0, 0, tzinfo=plus_one)  # same instant as NOW
    assert parse_retry_after("Wed, 15 Jan 2025 12:00:10 GMT", now=now) == 10.0


def test_parsed_value_feeds_delay():
    seconds = parse_retry_after("Wed, 15 Jan 2025 12:00:20 GMT", now=NOW)
    assert NO_JITTER.delay(1, seconds, 0.0) == 20.0
