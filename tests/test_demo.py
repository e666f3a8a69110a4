"""The demo hands `search` only the budget entries of the families it searches (others would be refused)."""

from __future__ import annotations

from dvt_search import families
from dvt_search.demo import DEMO_BUDGET, _budget_args


def test_budget_entries_follow_the_searched_families() -> None:
    spec = "sift_bow_svm=4,multitask_unet=2x3,not_registered=4x6"
    assert _budget_args(spec, "all") == ["--budget", "sift_bow_svm=4,multitask_unet=2x3"]
    assert _budget_args(spec, "vgg16,multitask_unet") == ["--budget", "multitask_unet=2x3"]
    assert _budget_args(spec, "vgg16") == []
    assert _budget_args("", "all") == []


def test_the_default_budget_names_only_real_families_or_the_cascade() -> None:
    named = {e.partition("=")[0] for e in DEMO_BUDGET.split(",")}
    assert named - set(families.names()) <= {"vein_cascade"}  # the cascade's slot, before it is registered
