# flanneld-py container image: the daemon (`flanneld-py`, the entry point) and the Python flannel
# CNI plugin (`flannel-cni`), in a virtual environment at /opt/venv.
#
# Build from the repository root:   docker build -t ghcr.io/flanneld-py/flanneld-py:0.1.0 .
# These machines have no container engine, so the image is linted (tests/test_deploy.py runs
# hadolint) but not built here. Both stages use the same base image, so the venv's interpreter
# symlink (/opt/venv/bin/python -> /usr/local/bin/python3.11) stays valid in the final stage.
# To pin the base by digest as well, append @sha256:<digest> to both FROM lines.

FROM python:3.11.16-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from (packages listed in setup.cfg [options.packages.find]).
COPY pyproject.toml setup.cfg README.md ./
COPY flanneld_py ./flanneld_py
COPY subnet ./subnet
COPY backend ./backend

# Build the project's wheel, install it with its pinned dependencies (setup.cfg) into a fresh
# venv and strip what the daemon never uses at run time (pip and setuptools themselves); then a
# smoke check that every runtime import resolves and both commands exist.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir /wheels/*.whl \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/python -c 'import flanneld_py.daemon, flanneld_py.cni' \
 && /opt/venv/bin/flanneld-py --version \
 && test -x /opt/venv/bin/flannel-cni


FROM python:3.11.16-slim-bookworm

LABEL org.opencontainers.image.title="flanneld-py" \
      org.opencontainers.image.description="Python re-implementation of flannel's flanneld daemon" \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONMALLOC=malloc: Python objects in glibc's heap rather than in pymalloc's 1 MiB arenas, so
# that the garbage of a start-up listing or a resync pass goes back to the system when the daemon
# calls malloc_trim after each full pass (about 4 MiB less resident memory at 5,000 peers, at no
# measurable CPU cost; see bench/README.md).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONMALLOC=malloc

# iptables (nft backend, Debian's default) for the forward and masquerade rules, and nft for
# them in nftables mode (EnableNFTables)
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables=1.8.9-2 nftables=1.0.6-2+deb12u2 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/venv /opt/venv

# No USER instruction: the daemon stays root. It creates and programs the flannel.<VNI> VXLAN
# device, neighbour/FDB entries and routes (CAP_NET_ADMIN), opens raw netlink sockets
# (CAP_NET_RAW) and writes /run/flannel/subnet.env on the host. The DaemonSet grants exactly
# NET_ADMIN and NET_RAW (not privileged); a non-root user would lose those capabilities at exec
# unless they were also made ambient, which Kubernetes cannot do.
# The daemon runs iptables, ip6tables, their -restore commands and nft (forward and masquerade
# rules) and nothing else.
ENTRYPOINT ["flanneld-py"]
