"""Ray Tune / Ray Train entry points (the functions Ray runs on the cluster)."""
