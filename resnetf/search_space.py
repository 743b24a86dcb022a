"""The search space of a study, read from the experiment's W&B sweep file: one definition that
both `--tune` (Optuna) and `wandb sweep` use.

A sweep file's `parameters` block, in W&B's format, maps Config fields to distributions:

    max_lr:    {distribution: log_uniform_values, min: 0.01, max: 1.0}   -> suggest_float(log=True)
    pct_start: {distribution: uniform, min: 0.1, max: 0.5}               -> suggest_float
    epochs:    {distribution: int_uniform, min: 4, max: 12}              -> suggest_int
    dropout:   {distribution: q_uniform, min: 0.0, max: 0.3, q: 0.05}    -> suggest_float(step=q)
    tta:       {values: [none, flip]}       (distribution: categorical)  -> suggest_categorical
    flip:      {value: true}                                             -> fixed, not searched

Without `distribution`, W&B infers it as this module does: `values` -> categorical, `value` ->
fixed, integer `min`/`max` -> int_uniform, else uniform. Any other distribution, or a name that
is no Config field, is one ConfigError naming it. Adding a tuned field is one edit, here in the
sweep file.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import Config, ConfigError, check_value

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = (
    "uniform",
    "log_uniform_values",
    "int_uniform",
    "q_uniform",
    "categorical",
    "constant",
)


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    distribution: str
    low: Any = None
    high: Any = None
    q: Any = None
    values: tuple = ()

    def suggest(self, trial) -> Any:
        """This parameter's value for an Optuna trial, from the suggestion of the same
        distribution."""
        d = self.distribution
        if d == "constant":
            return self.values[0]
        if d == "categorical":
            return trial.suggest_categorical(self.name, list(self.values))
        if d == "int_uniform":
            return trial.suggest_int(self.name, self.low, self.high)
        if d == "q_uniform":
            return trial.suggest_float(self.name, self.low, self.high, step=self.q)
        return trial.suggest_float(self.name, self.low, self.high, log=d == "log_uniform_values")

    def contains(self, value) -> bool:
        """Whether a config's own value is a point of this parameter's distribution."""
        d = self.distribution
        if d in ("categorical", "constant"):
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low <= value <= self.high:
            return False
        if d == "int_uniform":
            return float(value).is_integer()
        if d == "q_uniform":
            steps = (value - self.low) / self.q
            return abs(steps - round(steps)) < 1e-9
        return True

    def extremes(self) -> list:
        """The values that bound what this parameter can take: its range's ends or every value."""
        return list(self.values) if self.values else [self.low, self.high]

    def describe(self) -> dict:
        """A plain dict (a study records it, two workers compare it)."""
        return {
            k: v
            for k, v in {
                "distribution": self.distribution,
                "min": self.low,
                "max": self.high,
                "q": self.q,
                "values": list(self.values) or None,
            }.items()
            if v is not None
        }


def sweep_path(name: str, experiment: str | None = None) -> Path:
    """The sweep file: as given (absolute, or from the working directory), else where the
    experiment file's sweeps live: beside its folder (`experiments/../sweeps/x.yaml`, the repo's
    layout and a user's copy of it) or in it, else in the repo. `experiment`: the experiment
    file; None: the script this process runs (python experiments/x.py, resnetf train x.py)."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return path
    script = Path(experiment or sys.argv[0]).resolve()
    for base in (script.parent.parent, script.parent, REPO):
        if (base / path).is_file():
            return base / path
    return path


def read_space(name: str, experiment: str | None = None) -> dict[str, Param]:
    path = sweep_path(name, experiment)
    try:
        sweep = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(
            f"sweep: cannot read the sweep file {path} ({type(e).__name__}: {e}); looked in the "
            f"working directory and beside the experiment file"
        ) from None
    parameters = (sweep or {}).get("parameters") if isinstance(sweep, dict) else None
    if not parameters:
        raise ConfigError(f"sweep: {path} has no `parameters` block to search")
    return {name: parse_param(name, spec, path) for name, spec in parameters.items()}


def parse_param(name: str, spec: dict, path: Path = Path("sweep")) -> Param:
    """One parameter of the sweep file, its values checked against its field's type and
    choices before any trial (one line naming the parameter and the value)."""
    param = _parse_param(name, spec, path)
    try:
        for value in param.extremes():
            check_value(name, value)
    except ConfigError as e:
        raise ConfigError(
            f"sweep: {path}: parameter {name!r} allows a value its field refuses: {e}"
        ) from None
    if param.distribution in ("uniform", "log_uniform_values", "q_uniform"):
        try:
            check_value(name, 0.5)  # a float between the ends: the field must take one
        except ConfigError:
            raise ConfigError(
                f"sweep: {path}: parameter {name!r} draws floats ({param.distribution}), which "
                f"the field does not take; use int_uniform or values"
            ) from None
    return param


def _parse_param(name: str, spec: dict, path: Path = Path("sweep")) -> Param:
    fields = {f.name for f in dataclasses.fields(Config)}
    if name not in fields:
        raise ConfigError(f"sweep: {path} tunes {name!r}, which is no Config field")
    if not isinstance(spec, dict):
        raise ConfigError(f"sweep: {path}: parameter {name!r} is not a mapping ({spec!r})")
    d = spec.get("distribution") or _inferred(spec)
    if d not in DISTRIBUTIONS:
        raise ConfigError(
            f"sweep: {path}: parameter {name!r} has distribution {d!r}; --tune "
            f"knows {', '.join(DISTRIBUTIONS[:-1])} and a fixed value"
        )
    if d == "constant":
        return Param(name, d, values=(spec["value"],))
    if d == "categorical":
        if not spec.get("values"):
            raise ConfigError(f"sweep: {path}: categorical parameter {name!r} needs `values`")
        return Param(name, d, values=tuple(spec["values"]))
    try:
        low, high = (_bound(spec[k], k, name, d, path) for k in ("min", "max"))
    except KeyError as e:
        raise ConfigError(f"sweep: {path}: parameter {name!r} ({d}) needs {e.args[0]!r}") from None
    q = _bound(spec.get("q", 1), "q", name, d, path) if d == "q_uniform" else None
    if q is not None and q <= 0:
        raise ConfigError(f"sweep: {path}: parameter {name!r} needs q > 0 (got {q})")
    if not low < high or (d == "log_uniform_values" and low <= 0):
        raise ConfigError(
            f"sweep: {path}: parameter {name!r} needs 0 < min < max for {d}"
            if d == "log_uniform_values"
            else f"sweep: {path}: parameter {name!r} needs min < max (got {low}, {high})"
        )
    return Param(name, d, low, high, q=q)


def _bound(value, key: str, name: str, d: str, path: Path):
    """A bound as its distribution takes it: a number (YAML 1.1 reads `1e-5`, without a dot,
    as a string: it is read as the number it spells), an integer for int_uniform; anything
    else is one line naming the parameter."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"sweep: {path}: parameter {name!r}: {key} {value!r} is not a number")
    if d == "int_uniform":
        if not float(value).is_integer():
            raise ConfigError(
                f"sweep: {path}: parameter {name!r} is int_uniform: {key} {value!r} is not an "
                f"integer"
            )
        return int(value)
    return value


def _inferred(spec: dict) -> str | None:
    if "values" in spec:
        return "categorical"
    if "value" in spec:
        return "constant"
    if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
        return "int_uniform"
    return "uniform" if "min" in spec and "max" in spec else None


def suggest(trial, space: dict[str, Param]) -> dict:
    return {name: param.suggest(trial) for name, param in space.items()}


def corners(cfg: Config, space: dict[str, Param]):
    """Configs at every combination of the parameters' extremes: what a check must pass for the
    whole space to pass (each check here is monotonic in each parameter)."""
    names = list(space)
    for values in itertools.product(*(space[n].extremes() for n in names)):
        yield dict(zip(names, values)), cfg.replace(**dict(zip(names, values)))


def describe(space: dict[str, Param]) -> dict:
    return {name: param.describe() for name, param in space.items()}
