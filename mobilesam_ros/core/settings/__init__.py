"""Every setting of the node: one frozen type per subsystem, the single source of each
setting's default, accepted values, description and whether it may change at run time.

The node's ROS parameters (`ros/parameters.py`), the checks of `config/seg.yaml` and the
README's parameter table derive from these types. A value is checked where a settings object is
made, so a bad one never reaches the code that uses it: `InvalidInputError` names the parameter
and what it accepts. Fields marked `exposed=False` are tuning constants of the code, with the
same checks, that are not node parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.settings.everything import EverythingSettings
from mobilesam_ros.core.settings.fields import Setting, SettingInfo, Settings, value_problem
from mobilesam_ros.core.settings.inference import DecodeSettings, ModelSettings
from mobilesam_ros.core.settings.inputs import (
    LETTERBOXES,
    DetectionSettings,
    InputSettings,
    SyncSettings,
)
from mobilesam_ros.core.settings.outputs import DepthSettings, DiagnosticsSettings, OverlaySettings
from mobilesam_ros.core.settings.tracking import TrackingSettings

__all__ = [
    "LETTERBOXES",
    "DecodeSettings",
    "DepthSettings",
    "DetectionSettings",
    "DiagnosticsSettings",
    "EverythingSettings",
    "InputSettings",
    "ModelSettings",
    "NodeSettings",
    "OverlaySettings",
    "Setting",
    "SettingInfo",
    "Settings",
    "SyncSettings",
    "TrackingSettings",
    "value_problem",
]


@dataclass(frozen=True)
class NodeSettings:
    """The node's settings, one object per subsystem."""

    model: ModelSettings = field(default_factory=ModelSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    inputs: InputSettings = field(default_factory=InputSettings)
    overlay: OverlaySettings = field(default_factory=OverlaySettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    depth: DepthSettings = field(default_factory=DepthSettings)
    detections: DetectionSettings = field(default_factory=DetectionSettings)
    everything: EverythingSettings = field(default_factory=EverythingSettings)
    diagnostics: DiagnosticsSettings = field(default_factory=DiagnosticsSettings)

    @classmethod
    def groups(cls) -> Iterator[tuple[str, type[Settings]]]:
        for item in dataclasses.fields(cls):
            yield item.name, item.default_factory

    @classmethod
    def parameters(cls) -> list[Setting]:
        """Every node parameter (exposed field), in declaration order."""
        return [s for _, group in cls.groups() for s in group.settings() if s.info.exposed]

    @classmethod
    def from_values(cls, value_of: Callable[[str], Any]) -> NodeSettings:
        """Settings from parameter values; InvalidInputError names the first bad one."""
        return cls(**{name: group.from_values(value_of) for name, group in cls.groups()})

    def with_changes(self, changes: Mapping[str, Any]) -> NodeSettings:
        """These settings with some parameters changed (name -> value); InvalidInputError
        names a refused one, and a change of a parameter that is fixed at start."""
        known = {s.name: s for s in self.parameters()}
        for name in changes:
            if name in known and not known[name].info.dynamic:
                raise InvalidInputError(f"parameter {name} cannot change while the node runs")
        values = self.values()
        values.update({k: v for k, v in changes.items() if k in known})
        return self.from_values(values.__getitem__)

    def values(self) -> dict[str, Any]:
        """Every parameter's value, by name."""
        return {
            s.name: getattr(getattr(self, name), s.field_name)
            for name, group in self.groups()
            for s in group.settings()
            if s.info.exposed
        }
