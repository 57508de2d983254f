"""pipe.report.fleet: which instance runs which release, in the words a verdict ends with."""

from __future__ import annotations

from pipe.model import NO_RELEASE, UNKNOWN_RELEASE
from pipe.report.fleet import fleet_sentence

A, B, C = "000001-aaaaaaa", "000002-bbbbbbb", "000003-ccccccc"


def test_the_release_live_before_comes_first_then_the_new_one_then_the_rest() -> None:
    fleet = {"i-3": B, "i-1": A, "i-4": UNKNOWN_RELEASE, "i-2": A, "i-5": C, "i-6": NO_RELEASE}
    notes = {"i-3": "rollback Failed (exit 86)", "i-4": "agent lost"}

    sentence = fleet_sentence(fleet, A, B, notes)

    assert sentence == (
        f"Now i-1, i-2 run {A} (the release live before); i-3 runs {B} (the new release: rollback Failed (exit 86)); "
        f"i-5 runs {C}; i-6 runs no release; i-4: release unknown (where `current` points could not be read: "
        "agent lost)."
    )


def test_a_redeploy_of_the_live_release_says_so_and_an_empty_fleet_says_nothing() -> None:
    assert fleet_sentence({"i-1": B}, B, B, {}) == f"Now i-1 runs {B} (the release live before, deployed again)."
    assert fleet_sentence({}, A, B, {}) == ""


def test_a_large_fleet_names_twenty_per_release_and_counts_the_rest() -> None:
    fleet = {f"i-{n:02d}": A for n in range(25)}
    assert fleet_sentence(fleet, A, B, {}).startswith("Now i-00, i-01,")
    assert f"i-19 and 5 more run {A} (the release live before)." in fleet_sentence(fleet, A, B, {})


def test_an_instance_back_on_the_release_live_before_whose_switch_back_failed_is_not_said_to_run_it() -> None:
    # exit 86: current points back at A, but ACTIVATE_COMMANDS failed there too or a process still runs B
    fleet = {"i-1": A, "i-2": A, "i-3": A}
    failed_back = {"i-2": "its switch back Failed (exit 86)", "i-3": "its rollback Failed (exit 86)"}

    sentence = fleet_sentence(fleet, A, B, {"i-1": "the pipeline was stopped during its rollback"}, failed_back)

    assert sentence == (
        f"Now i-1 runs {A} (the release live before); "
        f"i-3: current points back at {A} (the release live before), but its rollback Failed (exit 86); "
        f"i-2: current points back at {A} (the release live before), but its switch back Failed (exit 86)."
    )


def test_a_failed_switch_back_is_named_with_no_release_live_before_and_on_a_redeploy_of_the_live_one() -> None:
    # no live release in the ledger: each instance went back to the release current pointed to as it began (C)
    failed_back = {"i-1": "its switch back Failed (exit 86)"}
    assert fleet_sentence({"i-1": C, "i-2": C}, "", B, {}, failed_back) == (
        f"Now i-2 runs {C}; i-1: current points back at {C}, but its switch back Failed (exit 86)."
    )
    # the live release deployed again: its switch back to it failed
    assert fleet_sentence({"i-1": B}, B, B, {}, failed_back) == (
        f"Now i-1: current points back at {B} (the release live before, deployed again), but its switch back "
        "Failed (exit 86)."
    )
    # still on the new release, the rollback failed: as before, the note says it
    assert fleet_sentence({"i-1": B}, A, B, {"i-1": "rollback Failed (exit 86)"}, failed_back) == (
        f"Now i-1 runs {B} (the new release: rollback Failed (exit 86))."
    )


def test_a_rollback_cut_by_a_stop_says_so_where_current_points_back() -> None:
    notes = {"i-1": "the pipeline was stopped during its rollback"}
    failed_back = {"i-1": "its rollback Cancelled"}
    assert fleet_sentence({"i-1": A}, A, B, notes, failed_back) == (
        f"Now i-1: current points back at {A} (the release live before), but the pipeline was stopped during its "
        "rollback."
    )
