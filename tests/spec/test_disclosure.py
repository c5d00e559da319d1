import pytest

from phm.disclosure import show, suppress


@pytest.mark.parametrize("count,expected", [(0, 0), (1, None), (7, None), (8, 10), (12, 10), (13, 15),
                                            (22, 20), (23, 25), (1_000_002, 1_000_000)])
def test_small_numbers_are_suppressed_and_others_rounded_to_5(count, expected):
    assert suppress(count) == expected


def test_negative_counts_are_an_error_and_show_marks_suppression():
    with pytest.raises(ValueError, match="negative"):
        suppress(-1)
    assert show(3) == "[suppressed]" and show(1234) == "1,235"
