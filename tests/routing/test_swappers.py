"""The eviction policies of SPEC 2.3 (llama-swap's group_test.go and matrix tests, our own)."""

from __future__ import annotations

from llama_swap_trio.routing.swappers import GroupSwapper, MatrixSwapper, swapper_for

from .builders import group, group_config, matrix_config, single_group


def fs(*ids: str) -> frozenset[str]:
    return frozenset(ids)


def test_no_groups_means_one_model_at_a_time() -> None:
    swapper = swapper_for(single_group("a", "b", "c"))
    assert swapper.evictions("a", fs("b", "c")) == fs("b", "c")


def test_swap_group_stops_the_previous_member() -> None:
    swapper = swapper_for(group_config(group("g", "a", "b", swap=True)))
    assert swapper.evictions("b", fs("a")) == fs("a")


def test_non_swap_group_members_coexist() -> None:
    swapper = swapper_for(group_config(group("g", "a", "b", swap=False)))
    assert swapper.evictions("b", fs("a")) == fs()


def test_exclusive_target_evicts_other_groups() -> None:
    swapper = swapper_for(group_config(group("g", "a"), group("h", "b", swap=False)))
    assert swapper.evictions("a", fs("b")) == fs("b")


def test_non_exclusive_groups_keep_each_other() -> None:
    config = group_config(group("g", "a", exclusive=False), group("h", "b", exclusive=False))
    swapper = swapper_for(config)
    assert swapper.evictions("a", fs("b")) == fs()
    assert swapper.evictions("b", fs("a")) == fs()


def test_persistent_group_is_never_evicted_by_other_groups() -> None:
    config = group_config(group("g", "a"), group("p", "x", "y", persistent=True))
    swapper = swapper_for(config)
    assert swapper.evictions("a", fs("x")) == fs()
    # but swap still applies inside the persistent group
    assert swapper.evictions("y", fs("x", "a")) == fs("x", "a")


def test_non_exclusive_target_does_not_unload_an_exclusive_group() -> None:
    config = group_config(group("ex", "a", exclusive=True), group("nx", "b", exclusive=False))
    assert swapper_for(config).evictions("b", fs("a")) == fs()


def test_target_is_never_in_its_own_evictions() -> None:
    swapper = swapper_for(single_group("a", "b"))
    assert swapper.evictions("a", fs("a", "b")) == fs("b")


def test_group_explain_names_evicted_and_kept_models() -> None:
    config = group_config(group("g", "a", "b"), group("p", "x", persistent=True))
    swapper = swapper_for(config)
    assert isinstance(swapper, GroupSwapper)
    text = swapper.explain("a", fs("b", "x"))
    assert "model=a" in text
    assert "b (same group 'g', swap=true)" in text
    assert "keep=[x]" in text


SETS = [("s1", {"a", "c"}), ("s2", {"b", "c"}), ("solo", {"big"})]


def test_matrix_target_running_evicts_nothing() -> None:
    swapper = swapper_for(matrix_config(["a", "b", "c", "big"], SETS))
    assert swapper.evictions("a", fs("a", "big")) == fs()


def test_matrix_evicts_models_outside_the_chosen_set() -> None:
    swapper = swapper_for(matrix_config(["a", "b", "c", "big"], SETS))
    assert swapper.evictions("b", fs("a", "c")) == fs("a")
    assert swapper.evictions("big", fs("a", "c")) == fs("a", "c")


def test_matrix_models_in_a_shared_set_coexist() -> None:
    swapper = swapper_for(matrix_config(["a", "b", "c", "big"], SETS))
    assert swapper.evictions("c", fs("a")) == fs()


def test_matrix_ties_go_to_the_earliest_set() -> None:
    sets = [("first", {"t", "x"}), ("second", {"t", "y"})]
    swapper = swapper_for(matrix_config(["t", "x", "y"], sets))
    # keeping x or keeping y costs the same: the first set wins, y is evicted
    assert swapper.evictions("t", fs("x", "y")) == fs("y")


def test_matrix_prefers_keeping_costly_models() -> None:
    sets = [("first", {"t", "x"}), ("second", {"t", "y"})]
    swapper = swapper_for(matrix_config(["t", "x", "y"], sets, costs={"y": 50}))
    assert swapper.evictions("t", fs("x", "y")) == fs("x")


def test_matrix_model_in_no_set_runs_alone() -> None:
    swapper = swapper_for(matrix_config(["a", "c", "lone"], [("s", {"a", "c"})]))
    assert swapper.evictions("lone", fs("a", "c")) == fs("a", "c")
    # and loading a set member evicts the loner
    assert swapper.evictions("a", fs("lone")) == fs("lone")


def test_matrix_explain_names_set_dsl_and_cost() -> None:
    swapper = swapper_for(matrix_config(["a", "b", "c", "big"], SETS, costs={"a": 7}))
    assert isinstance(swapper, MatrixSwapper)
    text = swapper.explain("b", fs("a", "c"))
    assert "set=s2" in text
    assert "evict=[a]" in text
    assert "cost=7" in text
    assert "already running" in swapper.explain("a", fs("a"))
    assert "runs alone" in swapper_for(matrix_config(["z"], [("s", {"q"})])).explain("z", fs())
