"""Data: image I/O, bundled sample data sets, paired few-shot data sets."""
