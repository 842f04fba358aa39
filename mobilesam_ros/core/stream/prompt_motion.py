"""Prompts of an older frame moved to a newer one by the optical flow between the two images.

A slow detector answers frame t while the camera is at t+k: its boxes and points are moved by
the motion measured inside each prompt's region before they meet the tracks of frame t+k.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mobilesam_ros.core.prompts import Prompt
from mobilesam_ros.core.stream.boxes import Box
from mobilesam_ros.core.stream.flow import FlowFrame, estimate_motions

# A point prompt has no extent of its own: the flow is measured in a square of this half-size
# around its points, large enough to hold a few trackable corners, small enough to stay on the
# clicked object.
POINT_REGION_HALF_SIZE_PX = 20.0


def prompt_region(prompt: Prompt, half_size: float = POINT_REGION_HALF_SIZE_PX) -> Box:
    """The image region whose motion moves `prompt`: its box, else a square around its points."""
    if prompt.box is not None:
        return prompt.box
    xs = [x for x, _ in prompt.points]
    ys = [y for _, y in prompt.points]
    return (min(xs) - half_size, min(ys) - half_size, max(xs) + half_size, max(ys) + half_size)


def move_prompts(before: FlowFrame, after: FlowFrame, prompts: Sequence[Prompt]) -> list[Prompt]:
    """`prompts` of the image `before` placed on the image `after`.

    Prompts whose motion cannot be measured reliably (too few tracked corners) stay where they
    are; so do all prompts when the two images differ in size.
    """
    if before.size != after.size or not prompts:
        return list(prompts)
    height, width = before.size
    regions = [prompt_region(prompt) for prompt in prompts]
    masks = []
    for x0, y0, x1, y1 in regions:
        mask = np.zeros((height, width), bool)
        mask[max(int(y0), 0) : int(y1) + 1, max(int(x0), 0) : int(x1) + 1] = True
        masks.append(mask)
    moved = []
    for prompt, motion in zip(
        prompts, estimate_motions(before, after, masks, regions), strict=True
    ):
        if not motion.reliable:
            moved.append(prompt)
            continue
        box = motion.apply(prompt.box) if prompt.box is not None else None
        points = tuple(motion.apply((x, y, x, y))[:2] for x, y in prompt.points)
        moved.append(dataclasses.replace(prompt, box=box, points=points))
    return moved
