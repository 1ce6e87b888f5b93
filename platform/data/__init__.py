"""Data: image formats and I/O, bundled sample data sets, paired / segmentation / matting data,
augmentation, splits, transfer functions and validation sequences. See the README, "Data and tasks"."""
