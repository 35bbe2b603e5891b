"""flanneld-py: a drop-in Python re-implementation of flanneld, flannel's overlay network daemon."""

__version__ = "0.1.0"
