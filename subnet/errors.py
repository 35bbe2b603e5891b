"""Errors shared by the subnet managers, importable without loading either datastore's client."""


class DatastoreUnavailable(RuntimeError):
    """The datastore (etcd or the Kubernetes API) could not be reached; worth retrying."""


class KubeError(RuntimeError):
    """A Kubernetes API problem an operator must fix (no node, no RBAC right, bad podCIDR)."""
