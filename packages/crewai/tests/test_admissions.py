"""The admission registry between the hook and the guarded tool: single use,
expiring, bounded."""

from __future__ import annotations

import pytest

from execauth_core import AuthorizationRequest
from execauth_crewai._admissions import Admissions, CallNote

REQUEST = AuthorizationRequest(tool="search", args={"q": "x"}, principal="p")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_admission_is_taken_once():
    admissions = Admissions(ttl=5, capacity=10)
    admitted = admissions.admit("tool", "sha256:a", REQUEST, None)

    assert admissions.take("tool", "sha256:a") is admitted
    assert admissions.take("tool", "sha256:a") is None
    assert len(admissions) == 0


def test_an_admission_is_bound_to_its_tool_and_arguments():
    admissions = Admissions(ttl=5, capacity=10)
    admissions.admit("tool", "sha256:a", REQUEST, None)

    assert admissions.take("other-tool", "sha256:a") is None
    assert admissions.take("tool", "sha256:b") is None
    assert admissions.take("tool", "sha256:a") is not None


def test_identical_calls_get_one_admission_each():
    admissions = Admissions(ttl=5, capacity=10)
    first = admissions.admit("tool", "sha256:a", REQUEST, "ctx1")
    second = admissions.admit("tool", "sha256:a", REQUEST, "ctx2")

    assert [admissions.take("tool", "sha256:a"), admissions.take("tool", "sha256:a")] == [first, second]
    assert admissions.take("tool", "sha256:a") is None


def test_admissions_expire():
    clock = Clock()
    admissions = Admissions(ttl=5, capacity=10, clock=clock)
    admissions.admit("tool", "sha256:a", REQUEST, None)

    clock.now += 5
    assert admissions.take("tool", "sha256:a") is None
    assert len(admissions) == 0


def test_capacity_drops_the_oldest():
    admissions = Admissions(ttl=60, capacity=2)
    admissions.admit("tool", "sha256:1", REQUEST, None)
    admissions.admit("tool", "sha256:2", REQUEST, None)
    admissions.admit("tool", "sha256:3", REQUEST, None)

    assert admissions.take("tool", "sha256:1") is None
    assert admissions.take("tool", "sha256:2") is not None
    assert admissions.take("tool", "sha256:3") is not None


def test_discarded_admission_cannot_be_taken():
    admissions = Admissions(ttl=5, capacity=10)
    admitted = admissions.admit("tool", "sha256:a", REQUEST, None)
    admissions.discard(admitted)

    assert admissions.take("tool", "sha256:a") is None


def test_notes_are_found_by_the_same_dict_object_only():
    admissions = Admissions(ttl=5, capacity=10)
    tool_input = {"q": "x"}
    admissions.note(tool_input, CallNote(block_message="blocked"))

    assert admissions.pop_note({"q": "x"}) is None  # equal, but another call's dict
    note = admissions.pop_note(tool_input)
    assert note is not None and note.block_message == "blocked"
    assert admissions.pop_note(tool_input) is None


def test_notes_expire():
    clock = Clock()
    admissions = Admissions(ttl=5, capacity=10, clock=clock)
    tool_input: dict[str, str] = {}
    admissions.note(tool_input, CallNote(block_message="blocked"))
    clock.now += 6
    admissions.admit("tool", "sha256:a", REQUEST, None)  # any call purges

    assert admissions.pop_note(tool_input) is None


@pytest.mark.parametrize("ttl,capacity", [(0, 1), (1, 0), (-1, 5)])
def test_bad_limits_are_refused(ttl, capacity):
    with pytest.raises(ValueError):
        Admissions(ttl=ttl, capacity=capacity)
