"""ROS 2 layer: the segmentation node, its topics, service and parameters (the messages' layouts
are read and built by mobilesam_ros.messages)."""
