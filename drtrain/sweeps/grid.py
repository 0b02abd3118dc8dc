"""A sweep's grid: its points, each a JobSpec checked as strictly as a job's own.

Every problem is an ``Invalid`` naming the grid path it is about: an empty or repeated
value list, a path that names no JobSpec field (with the closest field, for a typo), or a
value the schema refuses.
"""
from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
from functools import cache
from typing import Any

from pydantic import ValidationError

from drtrain.jobs.spec import JobSpec
from drtrain.kit.errors import Invalid, validation_message
from drtrain.sweeps.schemas import MAX_GRID_POINTS


def _invalid(path: str, msg: str, value: Any = None) -> Invalid:
    return Invalid(f"grid {path!r}: {msg}",
                   errors=[{"loc": ["body", "grid", path], "msg": msg, "input": value,
                            "type": "value_error"}])


def set_path(spec: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in a spec dict; a null section on the way (``"dr": null``) becomes {}
    so a grid can switch a section on and the schema fills its defaults."""
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise _invalid(path, f"{part!r} is not an object")
    node[leaf] = value


def _owner(exc: ValidationError, point: dict[str, Any]) -> str | None:
    """The grid path whose value the first schema error is about, if any."""
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        for path in point:
            if loc == path or loc.startswith(path + ".") or path.startswith(loc + "."):
                return path
    return None


def _same_value_key(value: Any) -> str:
    """Equal for values a job cannot tell apart (1 and 1.0 among them)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True)


def _check_values(path: str, values: list[Any]) -> None:
    if not values:
        raise _invalid(path, "needs at least one value")
    seen: set[str] = set()
    for value in values:
        key = _same_value_key(value)
        if key in seen:
            # two points alike would pool as replicates of one point, under the same seed
            raise _invalid(path, f"value {value!r} appears twice; each value once (seeds "
                                 "replicate a point: sweep 'seed')", value)
        seen.add(key)


@cache
def _spec_schema() -> dict[str, Any]:
    return JobSpec.model_json_schema()


def _object_schema(node: dict[str, Any]) -> dict[str, Any]:
    """The object a schema node stands for: through $ref, and the non-null choice of an
    optional section."""
    defs = _spec_schema().get("$defs", {})
    while True:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
            continue
        choices = [c for key in ("anyOf", "allOf", "oneOf") for c in node.get(key, ())
                   if c.get("type") != "null"]
        if not choices:
            return node
        node = choices[0]


def _fields_at(parents: list[str]) -> list[str]:
    """The JobSpec's field names inside the section ``parents`` (a list of names)."""
    node = _object_schema(_spec_schema())
    for part in parents:
        node = _object_schema(node.get("properties", {}).get(part, {}))
    return list(node.get("properties", {}))


def _unknown_field(exc: ValidationError, point: dict[str, Any]) -> Invalid | None:
    """A grid path that names no JobSpec field (the schema refuses extra fields), said as
    such, with the closest field, rather than blaming the value put there."""
    err = exc.errors()[0]
    if err["type"] != "extra_forbidden":
        return None
    loc = [str(part) for part in err["loc"]]
    dotted = ".".join(loc)
    path = next((p for p in point if p == dotted or p.startswith(dotted + ".")), None)
    if path is None:
        return None
    *parents, name = loc
    close = difflib.get_close_matches(name, _fields_at(parents), n=1)
    where = ".".join(parents) or "the JobSpec"
    hint = f" (did you mean {'.'.join([*parents, close[0]])!r}?)" if close else ""
    return _invalid(path, f"{where} has no field {name!r}{hint}")


def expand_grid(base: dict[str, Any], grid: dict[str, list[Any]]) -> list[tuple[dict, JobSpec]]:
    """(grid point, its JobSpec) for every combination of the grid's values, in order."""
    for path, values in grid.items():
        if not path or any(not part for part in path.split(".")):
            raise _invalid(path, "must be a dotted path such as 'pretrain.dr.weight'")
        _check_values(path, values)
    n_points = math.prod(len(v) for v in grid.values())
    if n_points > MAX_GRID_POINTS:
        raise Invalid(f"the grid has {n_points} points; at most {MAX_GRID_POINTS} are allowed",
                      errors=[{"loc": ["body", "grid"], "msg": "too many grid points",
                               "type": "value_error"}])
    out = []
    for combo in itertools.product(*grid.values()):
        point = dict(zip(grid, combo))
        spec_dict = copy.deepcopy(base)
        for path, value in point.items():
            set_path(spec_dict, path, value)
        try:
            spec = JobSpec.model_validate(spec_dict)
        except ValidationError as exc:
            if (unknown := _unknown_field(exc, point)) is not None:
                raise unknown from exc
            owner = _owner(exc, point)
            first = validation_message(exc.errors()[0])
            if owner is None:
                raise Invalid(f"grid point {point}: {first}",
                              errors=[{"loc": ["body", "grid"], "msg": first,
                                       "input": point, "type": "value_error"}]) from exc
            raise _invalid(owner, f"value {point[owner]!r}: {first}", point[owner]) from exc
        out.append((point, spec))
    return out


