"""Search spaces: ``search_spaces/<family>.yaml`` → a validated :class:`SearchSpace` → Optuna define-by-run.

File format (one file per family)::

    family: multitask_unet
    params:
      lr:          {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
      batch_size:  {type: categorical, choices: [8, 16, 32]}
      use_dropout: {type: categorical, choices: [true, false]}
      dropout:     {type: float, low: 0.0, high: 0.5, step: 0.05, when: {use_dropout: true}}
    fixed:
      optimizer: adam

* ``type`` is ``float``, ``int`` or ``categorical``. Numeric params take ``low`` < ``high``, optional
  ``log`` (needs ``low`` > 0) or ``step`` (not both); categorical params take a non-empty ``choices`` list
  of scalars (``null``, bool, int, float, str).
* ``when`` makes a param conditional: it is suggested only when every named param (which must appear
  *earlier* in ``params``) was suggested and took the given value (or one of a list of values).
* ``fixed`` pins knobs for the whole search without searching them.
* Every name in ``params`` and ``fixed`` must be a knob of the family (``Family.default_params()``).

Plain YAML 1.1 reads ``1e-5`` (no dot) as a string; numeric fields accept such strings as numbers.
Every error is a :class:`SearchSpaceError` naming the file and the key, e.g.
``search_spaces/vgg16.yaml: params.lr.low: must be > 0 when log is true (got 0.0)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dvt_search import families
from dvt_search.fsutil import atomic_write_text

#: Directory (inside a run directory) where snapshots of the searched spaces are written.
TYPES = ("float", "int", "categorical")
_FIELDS = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
}
_TOP_KEYS = {"family", "params", "fixed"}
_Scalar = (type(None), bool, int, float, str)


class SearchSpaceError(ValueError):
    """A search-space file is invalid; the message names the file and the offending key."""


@dataclass(frozen=True)
class ParamSpec:
    """One searched knob.

    Attributes:
        name: the family parameter it sets.
        type: ``float``, ``int`` or ``categorical``.
        low, high: inclusive bounds (numeric types).
        log: sample on a log scale (numeric types).
        step: discretisation step (numeric types; ``None`` = continuous float / 1 for int).
        choices: the values of a categorical param.
        when: conditions ``{earlier_param: allowed values}``, all of which must hold.
    """

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def distribution(self) -> Any:
        """The equivalent ``optuna.distributions`` object."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "float":
            return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return CategoricalDistribution(list(self.choices or ()))

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether this param is suggested, given the values suggested so far."""
        return all(name in values and values[name] in allowed for name, allowed in self.when.items())

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this param can take (in range, on its step, among its choices).

        No clamping or coercion: ``0.0`` is outside a log-scale range, ``"scale"`` outside a float range,
        ``True`` is not the choice ``1``.
        """
        if self.type == "categorical":
            return any(type(c) is type(value) and c == value for c in self.choices or ())
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.type == "int" and float(value) != int(value):
            return False
        if not float(self.low) <= float(value) <= float(self.high):
            return False
        step = self.step or (1 if self.type == "int" else None)
        if step is None:
            return True
        k = (float(value) - float(self.low)) / float(step)
        return abs(k - round(k)) <= 1e-8 * max(1.0, abs(k))

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this param's value."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices or ()))


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space of one family.

    Attributes:
        family: the registered family name.
        params: searched knobs in file order (the order conditions are evaluated in).
        fixed: knobs pinned for the whole search.
        source: the file it was loaded from (``None`` when built from a mapping).
        text: the file's text, written verbatim into run snapshots.
    """

    family: str
    params: tuple[ParamSpec, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None
    text: str = ""

    @property
    def conditional(self) -> bool:
        """Whether any param depends on another (TPE then groups params by co-occurrence)."""
        return any(p.when for p in self.params)

    def names(self) -> list[str]:
        return [p.name for p in self.params]


def _err(where: str, key: str, msg: str) -> SearchSpaceError:
    return SearchSpaceError(f"{where}: {key}: {msg}")


def _number(value: Any, where: str, key: str, *, integer: bool) -> float | int:
    if isinstance(value, bool):
        raise _err(where, key, f"must be a number (got {value!r})")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _err(where, key, f"must be a number (got {value!r})") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _err(where, key, f"must be a finite number (got {value!r})")
    if integer:
        if float(value) != int(value):
            raise _err(where, key, f"must be an integer for an int param (got {value!r})")
        return int(value)
    return float(value)


def _parse_param(
    name: str, spec: Any, where: str, earlier: Mapping[str, ParamSpec], all_names: set[str]
) -> ParamSpec:
    key = f"params.{name}"
    if not isinstance(spec, Mapping):
        raise _err(where, key, f"must be a mapping with at least 'type' (got {type(spec).__name__})")
    kind = spec.get("type")
    if kind not in TYPES:
        raise _err(where, f"{key}.type", f"unknown distribution type {kind!r}; expected one of {list(TYPES)}")
    unknown = sorted(set(spec) - _FIELDS[kind])
    if unknown:
        raise _err(
            where,
            f"{key}.{unknown[0]}",
            f"unknown field for a {kind} param; allowed: {sorted(_FIELDS[kind])}",
        )
    when = _parse_when(spec.get("when"), where, key, earlier, all_names)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, Sequence) or isinstance(choices, str) or not choices:
            raise _err(where, f"{key}.choices", "must be a non-empty list")
        for i, c in enumerate(choices):
            if not isinstance(c, _Scalar):
                raise _err(where, f"{key}.choices[{i}]", f"must be null, bool, int, float or str (got {c!r})")
        if len(set(map(repr, choices))) != len(choices):
            raise _err(where, f"{key}.choices", f"has duplicates: {list(choices)}")
        return ParamSpec(name, kind, choices=tuple(choices), when=when)
    integer = kind == "int"
    for f in ("low", "high"):
        if f not in spec:
            raise _err(where, f"{key}.{f}", f"missing (a {kind} param needs low and high)")
    low = _number(spec["low"], where, f"{key}.low", integer=integer)
    high = _number(spec["high"], where, f"{key}.high", integer=integer)
    if low >= high:
        raise _err(where, f"{key}.low", f"must be < high (got low={low}, high={high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise _err(where, f"{key}.log", f"must be true or false (got {log!r})")
    if log and low <= 0:
        raise _err(where, f"{key}.low", f"must be > 0 when log is true (got {low})")
    step = spec.get("step")
    if step is not None:
        step = _number(step, where, f"{key}.step", integer=integer)
        if step <= 0:
            raise _err(where, f"{key}.step", f"must be > 0 (got {step})")
        if log and not (integer and step == 1):
            raise _err(where, f"{key}.step", "cannot be combined with log: true")
    return ParamSpec(name, kind, low=low, high=high, log=log, step=step, when=when)


def _parse_when(
    when: Any, where: str, key: str, earlier: Mapping[str, ParamSpec], all_names: set[str]
) -> dict[str, tuple[Any, ...]]:
    if when is None:
        return {}
    if not isinstance(when, Mapping) or not when:
        raise _err(where, f"{key}.when", "must be a non-empty mapping {param: value or [values]}")
    out: dict[str, tuple[Any, ...]] = {}
    for other, value in when.items():
        if other not in earlier:
            why = (
                "refers to a param defined later in 'params' (conditions are evaluated in file order)"
                if other in all_names
                else "refers to an unknown param (not listed under 'params')"
            )
            raise _err(where, f"{key}.when.{other}", why)
        values = tuple(value) if isinstance(value, list) else (value,)
        ref = earlier[other]
        if ref.type == "categorical":
            bad = [v for v in values if v not in (ref.choices or ())]
            if bad:
                raise _err(
                    where,
                    f"{key}.when.{other}",
                    f"value(s) {bad} not among its choices {list(ref.choices or ())}",
                )
        out[str(other)] = values
    return out


def parse_space(doc: Any, *, where: str = "<search space>", family: str | None = None) -> SearchSpace:
    """Validate a loaded YAML document and build a :class:`SearchSpace`.

    Args:
        doc: the parsed YAML mapping.
        where: file name used in error messages.
        family: when given, the document must declare this family.

    Raises:
        SearchSpaceError: naming ``where`` and the offending key.
    """
    if not isinstance(doc, Mapping):
        raise SearchSpaceError(f"{where}: expected a mapping with keys {sorted(_TOP_KEYS)}")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise _err(where, str(unknown[0]), f"unknown top-level key; allowed: {sorted(_TOP_KEYS)}")
    name = doc.get("family")
    if not isinstance(name, str) or not name:
        raise _err(where, "family", "missing or not a string")
    try:
        fam = families.get(name)
    except KeyError as exc:
        raise _err(where, "family", str(exc.args[0])) from None
    if family is not None and name != family:
        raise _err(where, "family", f"declares {name!r} but the file is for family {family!r}")
    knobs = fam.default_params()
    raw_params = doc.get("params") or {}
    raw_fixed = doc.get("fixed") or {}
    for section, value in (("params", raw_params), ("fixed", raw_fixed)):
        if not isinstance(value, Mapping):
            raise _err(where, section, "must be a mapping")
        for k in value:
            if k not in knobs:
                raise _err(
                    where, f"{section}.{k}", f"unknown parameter of family {name!r}; known: {sorted(knobs)}"
                )
    both = sorted(set(raw_params) & set(raw_fixed))
    if both:
        raise _err(where, f"fixed.{both[0]}", "is also listed under params")
    parsed: dict[str, ParamSpec] = {}
    for pname, spec in raw_params.items():
        parsed[str(pname)] = _parse_param(str(pname), spec, where, parsed, set(map(str, raw_params)))
    return SearchSpace(family=name, params=tuple(parsed.values()), fixed=dict(raw_fixed))


def load_space(path: str | Path, *, family: str | None = None) -> SearchSpace:
    """Load and validate one search-space file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"{path}: no such search-space file")
    text = path.read_text()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SearchSpaceError(f"{path}: not valid YAML: {exc}") from None
    space = parse_space(doc, where=str(path), family=family)
    return SearchSpace(space.family, space.params, space.fixed, source=path, text=text)


def load_family_space(space_dir: str | Path, family: str) -> SearchSpace:
    """Load ``<space_dir>/<file>`` for ``family`` (file name from ``Family.search_space_file()``)."""
    fam = families.get(family)
    return load_space(Path(space_dir) / fam.search_space_file(), family=family)


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Define-by-run: suggest every active param of ``space`` on an Optuna trial, in file order.

    Returns:
        ``fixed`` updated by the suggested values (inactive conditional params are absent, so the
        family default applies).
    """
    values: dict[str, Any] = {}
    for p in space.params:
        if p.active(values):
            values[p.name] = p.suggest(trial)
    return {**dict(space.fixed), **values}


@dataclass(frozen=True)
class PaperPoint:
    """A family's paper configuration (``default_params()``) as seen by one search space.

    Attributes:
        params: the configuration a trial of this space runs: ``fixed`` plus every *active* searched param
            at its paper value (conditions evaluated on the paper values, in file order).
        in_space: the active searched params whose paper value the space can represent (what Optuna is
            given: ``study.enqueue_trial(in_space)``).
        outside: the active searched params whose paper value the space cannot represent (e.g. a weight
            decay of 0 in a log-scale range, or ``svm_gamma: scale`` in a float range); the trial still runs
            the paper value, Optuna is not told it (its distribution cannot hold it).
    """

    params: Mapping[str, Any]
    in_space: Mapping[str, Any]
    outside: Mapping[str, Any]


def paper_point(space: SearchSpace) -> PaperPoint:
    """The family's paper configuration split by what ``space`` can represent (see :class:`PaperPoint`)."""
    defaults = families.get(space.family).default_params()
    values: dict[str, Any] = {}
    in_space: dict[str, Any] = {}
    outside: dict[str, Any] = {}
    for p in space.params:
        if not p.active(values):
            continue
        v = defaults[p.name]
        values[p.name] = v
        (in_space if p.contains(v) else outside)[p.name] = v
    return PaperPoint({**dict(space.fixed), **values}, in_space, outside)


def suggest_paper(trial: Any, space: SearchSpace, point: PaperPoint) -> dict[str, Any]:
    """Define-by-run for the paper trial: ``point.in_space`` through Optuna, ``point.outside`` as given.

    The trial must have been enqueued with ``point.in_space`` (Optuna then returns those values).

    Returns:
        ``point.params``, with the in-space values as Optuna returned them.
    """
    values: dict[str, Any] = {}
    for p in space.params:
        if not p.active(values):
            continue
        values[p.name] = point.outside[p.name] if p.name in point.outside else p.suggest(trial)
    return {**dict(space.fixed), **values}


def write_snapshot(space: SearchSpace, path: str | Path) -> Path:
    """Write the space to ``path`` (a run's snapshot: the source text, verbatim)."""
    text = space.text or yaml.safe_dump(space_to_doc(space), sort_keys=False)
    atomic_write_text(path, text)
    return Path(path)


def load_snapshot(path: str | Path, family: str) -> SearchSpace:
    """The space a run searched (what ``--resume`` uses, so a later edit of the file cannot mix in)."""
    return load_space(Path(path), family=family)


def space_to_doc(space: SearchSpace) -> dict[str, Any]:
    """The space as a plain YAML-able mapping (the file format)."""
    params: dict[str, Any] = {}
    for p in space.params:
        d: dict[str, Any] = {"type": p.type}
        if p.type == "categorical":
            d["choices"] = list(p.choices or ())
        else:
            d.update(low=p.low, high=p.high)
            if p.log:
                d["log"] = True
            if p.step is not None:
                d["step"] = p.step
        if p.when:
            d["when"] = {k: (list(v) if len(v) > 1 else v[0]) for k, v in p.when.items()}
        params[p.name] = d
    return {"family": space.family, "params": params, "fixed": dict(space.fixed)}
