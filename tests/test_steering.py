"""The steering search grid: what it tries and in which order (ties go to the earlier setting)."""

from langloc.steer.steering import SteerSetting, search_grid


def test_search_grid_tries_each_position_mode_gentle_first():
    grid = search_grid("mean_active", (1.0, 2.0), positions=("all", "generated"))
    assert [s.label() for s in grid] == [
        "on(mean_activex1)", "on(mean_activex2)", "on(mean_activex1)+off", "on(mean_activex2)+off", "off",
        "on(mean_activex1)@generated", "on(mean_activex2)@generated", "on(mean_activex1)+off@generated",
        "on(mean_activex2)+off@generated", "off@generated"]


def test_search_grid_without_a_source_only_switches_on():
    grid = search_grid("p90", (1.5,), with_source=False, positions="prompt")
    assert grid == [SteerSetting("on", 1.5, "p90", "prompt")]
