"""Photos to a dataset: face detection, landmarks, head pose, the EG3D crop and its camera label."""
