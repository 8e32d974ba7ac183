"""tools/import_graph.py: circles and upward imports found in hand-made graphs, imports read from
source, and the package free of both."""

from __future__ import annotations

from tools.import_graph import (
    LAYERS,
    circles,
    folder_graph,
    import_graph,
    imported_modules,
    layer_of,
    split_folders,
    upward_imports,
)

# Low to high: "p" alone, then p.base and all below it, then p.mid.* except p.mid.top, which sits
# above it; anything else is in the last layer.
HAND_LAYERS = (
    ("root", ("p",)),
    ("base", ("p.base.*",)),
    ("mid", ("p.mid.*",)),
    ("top", ("p.mid.top",)),
    ("rest", ()),
)


def test_circles_finds_each_strongly_connected_group():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert circles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_function_local_and_from_imports_count():
    source = (
        "from p.m import name\n"
        "from p import sub\n"
        "def f():\n"
        "    import p.other\n"
        "    from q import x\n"
    )
    modules = ["p", "p.m", "p.sub", "p.other", "p.unused"]
    assert imported_modules(source, modules, package="p") == {"p.m", "p.sub", "p.other"}


def test_layer_of_takes_the_longest_matching_pattern():
    assert layer_of("p", HAND_LAYERS) == 0
    assert layer_of("p.base", HAND_LAYERS) == 1  # "p.base.*" holds the package itself
    assert layer_of("p.base.deep.leaf", HAND_LAYERS) == 1
    assert layer_of("p.mid.a", HAND_LAYERS) == 2
    assert layer_of("p.mid.top", HAND_LAYERS) == 3  # the exact name beats "p.mid.*"
    assert layer_of("p.baseline", HAND_LAYERS) == 4  # not inside p.base: no pattern, last layer
    assert layer_of("p.cli", HAND_LAYERS) == 4


def test_upward_imports_are_those_into_a_higher_layer():
    graph = {
        "p": set(),
        "p.base.a": {"p", "p.base.b"},  # down and sideways: allowed
        "p.base.b": {"p.mid.a"},  # base -> mid: up
        "p.mid.a": {"p.base.a", "p.mid.top"},  # mid -> top: up
        "p.mid.top": {"p.mid.a", "p.cli"},  # top -> rest: up
        "p.cli": {"p", "p.base.a", "p.mid.top"},
    }
    assert upward_imports(graph, HAND_LAYERS) == [
        ("p.base.b", "p.mid.a"), ("p.mid.a", "p.mid.top"), ("p.mid.top", "p.cli")]
    assert upward_imports({"p.cli": {"p.base.a"}, "p.base.a": set()}, HAND_LAYERS) == []


def test_folders_import_each_other_only_one_way():
    # No two modules import each other, yet p.mid's leaf is imported by p.base while p.mid.top
    # imports p.base: the folders p.base and p.mid form a circle, and p.mid spans two layers.
    graph = {"p.base.a": {"p.mid.leaf", "p.util"}, "p.mid.leaf": set(),
             "p.mid.top": {"p.base.a"}, "p.util": set()}
    assert circles(graph) == []
    assert folder_graph(graph, package="p") == {"p.base": {"p.mid", "p.util"},
                                                "p.mid": {"p.base"}, "p.util": set()}
    assert circles(folder_graph(graph, package="p")) == [["p.base", "p.mid"]]
    assert split_folders(graph, HAND_LAYERS, package="p") == ["p.mid"]
    graph["p.base.a"] = {"p.util"}
    assert circles(folder_graph(graph, package="p")) == []


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "sallm_jax.models.hub.load" in graph and "sallm_jax.report.runs" in graph
    assert circles(graph) == []


def test_the_package_imports_only_downward():
    graph = import_graph()
    assert upward_imports(graph) == []
    # Every pattern of the table still names a module or package, so none is stale.
    for _, patterns in LAYERS:
        for pattern in patterns:
            assert pattern.removesuffix(".*") in graph, pattern
    names = [layer for layer, _ in LAYERS]
    assert layer_of("sallm_jax.eval.evaluate") == names.index("evaluation")
    assert layer_of("sallm_jax.metrics.text") == names.index("metrics")
    assert layer_of("sallm_jax.eval.draw_spread") == names.index("evaluation")
    top = len(LAYERS) - 1
    assert layer_of("sallm_jax.configs.base") == layer_of("sallm_jax.run.experiment") == top
