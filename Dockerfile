# aijobs image: one image for aijobs-scheduler, aijobs-worker, aijobs-gateway, aijobsctl and
# aijobs-load; the first word of the command picks the binary:
#
#   docker run --rm aijobs aijobs-scheduler --listen 0.0.0.0:50051 --database_url "$DB"
#   docker run --rm aijobs aijobsctl --server 10.0.0.5:50051 list
#
# Build with `./dev image` (builds a local Debian 12 base with mmdebstrap when no registry is
# reachable, see deploy/README.md), or where a registry is reachable:
#
#   docker build --build-arg VERSION=$(git describe --always) \
#     --build-arg COMMIT=$(git rev-parse HEAD) -t aijobs .
#
# Everything comes from Debian 12 packages, as in ./dev.
ARG BASE_IMAGE=debian:bookworm

# --- build: the same CMake + Ninja Release build as `./dev build` ----------------------------
FROM ${BASE_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
# Parallel compile jobs (the build machine may be shared: ./dev image passes AIJOBS_JOBS).
ARG BUILD_JOBS=2
# dev's PACKAGES, less what only runs tests (PostgreSQL, chromium, node, pgbouncer, clang,
# ccache). GoogleTest and Google Benchmark stay: aijobs-load is declared in bench/, which
# CMake reads only with the tests and benchmarks enabled; only the five binaries are built.
# prometheus-cpp-dev is here ahead of the metrics work of issue 15 (unused until then).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto \
      golang-github-grpc-ecosystem-grpc-gateway-dev libabsl-dev libspdlog-dev \
      libpq-dev libssl-dev libjwt-dev libcurl4-openssl-dev libboost-dev \
      libgtest-dev libgmock-dev libbenchmark-dev prometheus-cpp-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DAIJOBS_SANITIZE= \
 && cmake --build /build -j "${BUILD_JOBS}" \
      --target aijobs-scheduler aijobs-worker aijobs-gateway aijobsctl aijobs-load \
 && mkdir -p /out/bin \
 && for b in aijobs-scheduler aijobs-worker aijobs-gateway aijobsctl aijobs-load; do \
      strip --strip-unneeded -o "/out/bin/$b" "/build/bin/$b"; \
    done
# The runtime packages are found, not listed: every shared library the binaries load (ldd),
# mapped to the Debian package that ships it (dpkg -S). A library added to the build is
# picked up by the next image without editing this file.
RUN set -e; \
    for b in /out/bin/*; do ldd "$b"; done | awk '$2 == "=>" && $3 ~ /^\// {print $3}' \
      | sort -u > /out/libs; \
    while read -r lib; do \
      pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null \
            || dpkg -S "${lib#/usr}" 2>/dev/null) \
        || { echo "no Debian package ships $lib" >&2; exit 1; }; \
      echo "${pkg%%:*}"; \
    done < /out/libs | sort -u > /out/runtime-packages; \
    echo "runtime packages: $(tr '\n' ' ' < /out/runtime-packages)"

# --- runtime: the binaries and the shared libraries they need ---------------------------------
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="aijobs" \
      org.opencontainers.image.description="aijobs: durable asynchronous LLM jobs (scheduler, worker, gateway, aijobsctl, aijobs-load)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.base.name="debian:bookworm"
COPY --from=build /out/runtime-packages /tmp/runtime-packages
# ca-certificates: workers call LLM providers over HTTPS. tini: PID 1 that passes signals on
# and reaps (aijobsctl watch stops on Ctrl-C under `docker run -it` too).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini $(cat /tmp/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/runtime-packages \
 && groupadd --system --gid 10001 aijobs \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/aijobs --create-home \
      --shell /usr/sbin/nologin aijobs
COPY --from=build /out/bin/ /usr/local/bin/
COPY deploy/image/aijobs-entrypoint /usr/local/bin/aijobs-entrypoint
# Fails the build if a binary would not start for want of a library.
RUN ! ldd /usr/local/bin/aijobs-* /usr/local/bin/aijobsctl | grep 'not found' \
 && aijobsctl --help >/dev/null
USER 10001:10001
WORKDIR /var/lib/aijobs
# 50051: scheduler gRPC (JobService, WorkerService, grpc.health.v1); 8080: gateway HTTP.
EXPOSE 50051 8080
# Every server drains on SIGTERM (--shutdown_grace_ms, --drain_timeout_ms).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/aijobs-entrypoint"]
CMD ["help"]
