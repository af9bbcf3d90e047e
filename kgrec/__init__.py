"""kgrec: knowledge-graph + graph-neural-network recommendations for e-commerce."""

__version__ = "0.1.0"
