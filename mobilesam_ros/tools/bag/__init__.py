"""Recordings in, the node's outputs out: rosbag2 processing without a ROS install."""
