"""ROS 2 layer: message conversions, the segmentation node and its parameters."""
