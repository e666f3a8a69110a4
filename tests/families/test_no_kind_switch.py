"""No caller outside ``dvt_search/families/`` decides by a family's ``kind`` (it is a label for people).

What differs between families is asked of the family (``Family.trial_needs``, ``fit_options``,
``count_parameters``, ``open_export``; ``Model.n_params``, ``export``...). This test parses every module of
the package outside ``families/`` (plus ``bench/``) and fails on a comparison (``==``, ``!=``, ``in``,
``not in``, ``is``) of an attribute named ``kind`` that belongs to a family, model or setup: the receiver's
name says so (``family.kind``, ``setup.kind``, ``get_family(n).kind``...) or it is compared with a family
label (``"torch"``, ``"classic"``, or any registered family's ``kind``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from dvt_search import families

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("dvt_search", "bench")
OWNER = "dvt_search/families/"

_RECEIVER = re.compile(r"fam|model|setup|trial|spec|cls|export", re.IGNORECASE)


def _labels() -> set[str]:
    return {"torch", "classic"} | {f.kind for f in families.all_families() if f.kind}


def _constants(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def _is_kind(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "kind":
        return True
    return (  # getattr(x, "kind")
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and node.args[1].value == "kind"
    )


def _receiver(node: ast.AST) -> ast.AST:
    return node.value if isinstance(node, ast.Attribute) else node.args[0]  # type: ignore[attr-defined]


def kind_switches(source: str, labels: set[str]) -> list[tuple[int, str]]:
    """``(line, code)`` of every comparison of a family/model/setup ``kind`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        kinds = [o for o in operands if _is_kind(o)]
        if not kinds:
            continue
        others = set().union(*(_constants(o) for o in operands if not _is_kind(o)))
        family_like = any(_RECEIVER.search(ast.unparse(_receiver(k))) for k in kinds)
        if family_like or others & labels:
            found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def _modules() -> list[Path]:
    return sorted(p for d in SCANNED for p in (REPO / d).rglob("*.py"))


def test_the_scanner_flags_kind_switches_and_nothing_else() -> None:
    snippet = "\n".join(
        [
            "if family.kind == 'torch': pass",  # 1
            "n = 1 if setup.kind != 'torch' else 2",  # 2
            "ok = get_family(name).kind in ('classic', 'x')",  # 3
            "same = model.kind == other.kind",  # 4
            "g = getattr(cls, 'kind') == 'torch'",  # 5
            "w = thing.kind == 'classic'",  # 6: compared with a family label
            "a = anat.kind == 'femoral'",  # not a family
            "s = fam.kind",  # no comparison (a label may be shown)
            "b = block.kind.startswith('verdict')",  # not a comparison
        ]
    )
    assert [line for line, _ in kind_switches(snippet, {"torch", "classic"})] == [1, 2, 3, 4, 5, 6]


def test_no_module_outside_families_switches_on_kind() -> None:
    labels = _labels()
    offenders = []
    for path in _modules():
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(OWNER):
            continue
        offenders += [f"{rel}:{line}: {code}" for line, code in kind_switches(path.read_text(), labels)]
    assert not offenders, "ask the family (a hook in families/base.py) instead of its kind:\n" + "\n".join(
        offenders
    )
