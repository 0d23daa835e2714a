# kube-nftlb: one image, two containers in the DaemonSet (deploy/daemonset.yaml).
#   reconciler: `kube-nftlb run` (the default ENTRYPOINT and CMD); the image runs as uid 65532,
#               the DaemonSet as uid 0 with CAP_NET_ADMIN only (conntrack cleanup)
#   nftlb:      /usr/local/bin/nftlb-start.sh as uid 0 with CAP_NET_ADMIN only (see docs/install.md)
#
#   docker build -t REGISTRY/kube-nftlb:0.1.0 .

ARG VERSION=0.1.0

# -- build: the project's wheel (pure Python; its dependencies come from PyPI in the final stage)
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- final: Debian's python3 and nftlb, the wheel in a venv, nothing to compile with
FROM debian:bookworm-slim
ARG VERSION
LABEL org.opencontainers.image.title="kube-nftlb" \
      org.opencontainers.image.description="A Kubernetes Service proxy that programs nftlb in place of kube-proxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv nftlb nftables conntrack \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log

COPY --from=build /wheels /tmp/wheels
RUN python3 -m venv /opt/kube-nftlb \
    && /opt/kube-nftlb/bin/pip install --no-cache-dir /tmp/wheels/*.whl \
    && /opt/kube-nftlb/bin/pip uninstall --yes pip setuptools \
    && rm -rf /tmp/wheels

COPY deploy/image/nftlb-start.sh /usr/local/bin/nftlb-start.sh

RUN groupadd --system --gid 65532 kube-nftlb \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin kube-nftlb

ENV PATH=/opt/kube-nftlb/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
ENTRYPOINT ["kube-nftlb"]
CMD ["run"]
