"""A message lists at most a few things, then how many more."""

from s2dc.messages import listed


def test_a_short_list_is_given_whole_and_a_long_one_cut_with_the_count_of_the_rest():
    assert listed([]) == ""
    assert listed(["'a'", "'b'"]) == "'a', 'b'"
    assert listed([str(k) for k in range(5)]) == "0, 1, 2, 3, 4"
    assert listed([str(k) for k in range(7)]) == "0, 1, 2, 3, 4 and 2 more"
    assert listed(["x", "y", "z", "w"], 3) == "x, y, z and 1 more"
