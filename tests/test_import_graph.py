"""tools/import_graph.py: circles found in hand-made graphs, imports read from source, and
the package free of circles."""

from __future__ import annotations

from tools.import_graph import circles, import_graph, imported_modules


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


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "sallm_jax.models.hub.load" in graph and "sallm_jax.report.runs" in graph
    assert circles(graph) == []
