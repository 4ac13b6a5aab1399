"""mammo-tui: train breast-density classifiers (BI-RADS A-D) without model collapse."""

__version__ = "0.1.0"
