"""The machinery of the settings types: a field's metadata, the base class that checks every
field when a settings object is made, and the check of one value."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mobilesam_ros.core.errors import InvalidInputError


@dataclass(frozen=True)
class SettingInfo:
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    dynamic: bool = False  # may change while the node runs
    parameter: str | None = None  # the parameter's name when it is not PREFIX + field name
    exposed: bool = True  # False: a tuning constant of the code, not a node parameter
    forms: str = ""  # the accepted forms, in words, where `check` decides (not choices or range)


def setting(
    default: Any,
    description: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    dynamic: bool = False,
    parameter: str | None = None,
    exposed: bool = True,
    forms: str = "",
) -> Any:
    """A settings field with its default and its `SettingInfo`."""
    info = SettingInfo(description, minimum, maximum, choices, dynamic, parameter, exposed, forms)
    return field(default=default, metadata={"setting": info})


@dataclass(frozen=True)
class Setting:
    """One field of a settings type, seen from outside (e.g. as a ROS parameter)."""

    name: str  # the parameter name, e.g. "tracking.max_age"
    field_name: str
    default: bool | int | float | str | tuple[str, ...]
    info: SettingInfo


class Settings:
    """Base of the settings types: checks every field on construction (see `check`)."""

    PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for item in self.settings():
            problem = value_problem(item, getattr(self, item.field_name))
            if problem:
                raise InvalidInputError(problem)
        self.check()

    def check(self) -> None:
        """Checks across fields; raise InvalidInputError naming the parameters."""

    @classmethod
    def settings(cls) -> list[Setting]:
        return [
            Setting(
                info.parameter or cls.PREFIX + item.name,
                item.name,
                item.default,
                info,
            )
            for item in dataclasses.fields(cls)  # type: ignore[arg-type]
            if (info := item.metadata.get("setting")) is not None
        ]

    @classmethod
    def from_values(cls, value_of: Callable[[str], Any]) -> Any:
        """An instance whose exposed fields are `value_of(parameter name)`."""
        return cls(**{s.field_name: value_of(s.name) for s in cls.settings() if s.info.exposed})


def value_problem(item: Setting, value: Any) -> str | None:
    """Why `value` is refused for `item`, or None."""
    info = item.info
    if info.choices and value not in info.choices:
        return (
            f"parameter {item.name} = {value!r} is not accepted; "
            f"accepted values: {', '.join(info.choices)}"
        )
    if info.minimum is not None or info.maximum is not None:
        if isinstance(value, float) and not math.isfinite(value):
            return f"parameter {item.name} = {value!r} is not a finite number"
        low = -math.inf if info.minimum is None else info.minimum
        high = math.inf if info.maximum is None else info.maximum
        if not (low <= value <= high):
            return f"parameter {item.name} = {value!r} is out of range [{low}, {high}]"
    return None
