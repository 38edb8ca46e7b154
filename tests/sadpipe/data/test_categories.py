"""The one class-index rule: class c is the (c+1)-th category id in increasing order, whatever
order a file lists its categories in."""
import itertools

import pytest

from sadpipe.data.categories import (
    as_dicts,
    class_index_of,
    class_order,
    class_permutation,
    in_class_order,
    same_ids,
)

FILE_ORDER = [{"id": 42, "name": "boat"}, {"id": 7, "name": "car"}, {"id": 99, "name": "person"}]
# written out by hand from the rule
CLASSES = ((7, "car"), (42, "boat"), (99, "person"))


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_every_listing_order_gives_the_same_classes(order):
    listed = [FILE_ORDER[i] for i in order]
    assert class_order(listed) == CLASSES
    assert class_order([(c["id"], c["name"]) for c in listed]) == CLASSES
    assert class_index_of([c["id"] for c in listed]) == {7: 0, 42: 1, 99: 2}
    assert as_dicts((c["id"], c["name"]) for c in listed) == [
        {"id": 7, "name": "car"}, {"id": 42, "name": "boat"}, {"id": 99, "name": "person"}]


def test_permutation_puts_a_stored_order_in_class_order():
    stored = [(42, "boat"), (7, "car"), (99, "person")]
    perm = class_permutation(stored)
    assert perm == [1, 0, 2]
    assert tuple(stored[p] for p in perm) == CLASSES
    assert class_permutation(CLASSES) == [0, 1, 2]


def test_in_class_order_and_same_ids():
    assert in_class_order(CLASSES) and in_class_order(()) and in_class_order(((3, "a"),))
    assert not in_class_order(((42, "boat"), (7, "car")))
    assert not in_class_order(((7, "car"), (7, "car")))
    assert same_ids([42, 7, 99], [7, 99, 42])
    assert not same_ids([42, 7], [7, 42, 99]) and not same_ids([1, 2], [1, 3])
