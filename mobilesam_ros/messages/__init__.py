"""ROS message layouts without a ROS install.

`readers` turn messages (images, depth, camera_info, prompts, detections, clicks, masks) into
the core's types; `builders` turn the core's results into the node's output messages, given
the message classes to build them from (`builders.MessageTypes`): rclpy's in the node
(`ros/conversions.ROS_TYPES`), rosbags' in the bag tools. Only field names and values matter
here, so the same code reads and builds the messages of both. Nothing here imports rclpy or a
message package.
"""
