"""Errors shared by the subnet managers, importable without loading either datastore's client."""


class DatastoreUnavailable(RuntimeError):
    """The datastore (etcd or the Kubernetes API) could not be reached; worth retrying."""


class ConfigNotFound(LookupError):
    """The network config has not been written to the datastore yet."""


class KubeError(RuntimeError):
    """A Kubernetes API problem an operator must fix (no node, no RBAC right, bad podCIDR)."""


class SubnetContention(RuntimeError):
    """Other nodes took every subnet this node chose, several times in a row; worth retrying."""
