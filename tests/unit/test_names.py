import re

import pytest

from shared.core.names import MAX_SEGMENT, blob_segment

NAMES = ["images.txt", "team/images.txt", "../../etc/passwd.txt", "..", ".", ".hidden.txt", "a.", "100%.txt",
         "%2F", "nul\x00byte.txt", "naïve café 🚢.txt", "x" * 1024, "x" * 1023 + "y", "a\\b", "~", "", "lone\udc80"]


@pytest.mark.parametrize("name", NAMES)
def test_a_segment_stays_in_its_prefix(name):
    segment = blob_segment(name)
    assert 0 < len(segment) <= MAX_SEGMENT
    assert "/" not in segment and "\\" not in segment and "\x00" not in segment
    assert segment not in (".", "..") and not segment.endswith(".") and not segment.startswith(".")
    assert segment.isascii() and all(c.isalnum() or c in "-_.%~" for c in segment)


def test_distinct_names_give_distinct_segments():
    segments = [blob_segment(n) for n in NAMES]
    assert len(set(segments)) == len(NAMES)
    # the usual ambiguities of ad-hoc sanitising
    assert blob_segment("a/b") != blob_segment("a_b") != blob_segment("a%2Fb")


def test_ordinary_names_stay_readable():
    assert blob_segment("images.txt") == "images.txt"
    assert blob_segment("team/images.txt") == "team%2Fimages.txt"
    assert blob_segment("../x") == "%2E.%2Fx"
    assert blob_segment("café") == "caf%C3%A9"


def test_long_names_are_cut_with_a_hash_never_inside_an_escape():
    long = blob_segment("é" * 500)
    assert len(long) <= MAX_SEGMENT and long[-17] == "~"
    head = long[:-17]
    assert re.fullmatch(r"(?:%[0-9A-F]{2})+", head), head  # whole escapes only
    assert blob_segment("x" * 1024) != blob_segment("x" * 1025)
    assert len(blob_segment("a" * 5000, max_length=40)) <= 40


def test_not_a_string():
    with pytest.raises(TypeError):
        blob_segment(b"x")  # type: ignore[arg-type]
