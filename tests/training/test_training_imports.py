"""The training package has no import cycle, and its command line is only the sum of its registered commands."""

from __future__ import annotations

import grimp

from training.cli import COMMAND_MODULES, build_parser
from training.commands import registered


def import_cycles(package: str) -> list[list[str]]:
    """The strongly connected groups of more than one module in ``package``'s import graph (Tarjan).

    grimp reads every import statement, those inside functions included, so an import hidden in a
    function to dodge a cycle still counts.
    """
    graph = grimp.build_graph(package, cache_dir=None)
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in modules:
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return cycles


def test_the_training_package_has_no_import_cycle():
    assert import_cycles("training") == []


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / "knot"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from knot import b\n")
    (package / "b.py").write_text("def late():\n    from knot import a  # hidden in a function\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("knot") == [["knot.a", "knot.b"]]


def test_every_command_module_registers_its_commands_and_the_parser_holds_them_all():
    parser = build_parser()
    names = set(parser._subparsers._group_actions[0].choices)
    commands = registered()
    assert names == set(commands) == {"train", "evaluate", "export", "group", "groups", "tools", "quantize",
                                      "reproduce", "gate", "levels", "tta", "references", "refresh", "tune", "visualize"}
    assert {add.__module__ for add in commands.values()} == set(COMMAND_MODULES)
