"""Data: image formats and I/O, bundled sample data sets, paired / segmentation / matting data,
augmentation, splits, transfer functions and validation sequences. See docs/data-and-tasks.md."""
