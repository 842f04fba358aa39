"""The simulated camera's box prompts: as many as asked, sub-boxes of the visible objects."""

from __future__ import annotations

import pytest

from mobilesam_ros.tools.camera_sim import prompt_boxes, sub_box

BOXES = {
    "person": (10.0, 20.0, 310.0, 420.0),
    "flag": (0.0, 0.0, 80.0, 479.0),
    "patch": (200.0, 300.0, 260.0, 340.0),
}


def inside(inner: tuple, outer: tuple) -> bool:
    return (
        outer[0] <= inner[0] < inner[2] <= outer[2] and outer[1] <= inner[1] < inner[3] <= outer[3]
    )


@pytest.mark.parametrize("count", [1, 2, 3])
def test_up_to_the_visible_objects_the_prompts_are_their_boxes(count):
    assert prompt_boxes(BOXES, count) == dict(list(BOXES.items())[:count])


def test_more_prompts_than_objects_add_sub_boxes_of_each_object_in_turn():
    prompts = prompt_boxes(BOXES, 100)
    assert len(prompts) == 100
    names = list(prompts)
    assert names[:3] == list(BOXES)
    assert names[3:9] == ["person#1", "flag#1", "patch#1", "person#2", "flag#2", "patch#2"]
    assert names[-1] == "person#33"  # 97 sub-boxes: 33 of person, 32 of flag and patch
    for name, box in prompts.items():
        assert inside(box, BOXES[name.split("#")[0]]), name
    assert len(set(prompts.values())) == 100  # no two prompts share a box


def test_a_sub_box_depends_only_on_its_object_and_index():
    alone = prompt_boxes({"patch": BOXES["patch"]}, 5)
    together = prompt_boxes(BOXES, 15)
    for k in range(1, 5):
        assert alone[f"patch#{k}"] == together[f"patch#{k}"] == sub_box(BOXES["patch"], k)


def test_the_first_sub_boxes_are_the_centre_then_the_corners_at_0_8_of_the_size():
    box = (0.0, 0.0, 100.0, 50.0)
    assert sub_box(box, 1) == pytest.approx((10.0, 5.0, 90.0, 45.0))
    assert sub_box(box, 2) == pytest.approx((0.0, 0.0, 80.0, 40.0))
    assert sub_box(box, 9) == pytest.approx((20.0, 10.0, 100.0, 50.0))
    assert sub_box(box, 10) == pytest.approx((18.0, 9.0, 82.0, 41.0))  # next size: 0.64


def test_no_objects_no_prompts_and_bad_counts_are_refused():
    assert prompt_boxes({}, 10) == {}
    assert prompt_boxes(BOXES, 0) == {}
    with pytest.raises(ValueError):
        prompt_boxes(BOXES, -1)
    with pytest.raises(ValueError):
        sub_box(BOXES["patch"], 0)


def test_every_frame_of_the_camera_carries_100_boxes_inside_the_image():
    from mobilesam_ros.tools.camera_sim import astronaut_camera

    camera = astronaut_camera()
    width, height = camera.size
    for index in range(0, camera.period, 15):
        frame = camera.frame(index)
        prompts = prompt_boxes(frame.boxes, 100)
        assert len(prompts) == 100, index
        assert all(inside(box, (0, 0, width - 1, height - 1)) for box in prompts.values())
