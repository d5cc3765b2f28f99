"""Dataset helpers: toy-data checks and validating datasets for segmentation."""
