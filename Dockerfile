# flanneld-py container image: the daemon and the flannel CNI plugin.
# (Not built in CI: these machines have no container engine.)
FROM python:3.11-slim-bookworm
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY flanneld_py ./flanneld_py
COPY subnet ./subnet
COPY backend ./backend
RUN pip install --no-cache-dir . \
 && printf '#!/bin/sh\nexec flannel-cni "$@"\n' > /usr/local/bin/flannel \
 && chmod 755 /usr/local/bin/flannel
ENTRYPOINT ["flanneld-py"]
