"""Data: image formats and I/O, bundled sample data sets, paired / segmentation / matting data,
augmentation, splits, transfer functions and validation sequences. See notes/data.md."""
