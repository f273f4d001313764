# grymd, the grym-worker reference workers, the Python workers and the
# `grym` command line, in one image.
#
#   docker build -t grym:local .
#   docker run --rm -p 50051:50051 grym:local            # grymd, built-in worker
#   docker run --rm grym:local grym-worker sim --help     # a reference worker
#   docker exec CONTAINER grym health                     # what HEALTHCHECK runs
#
# Base images are pinned by version tag; for byte-for-byte reproducible
# builds pin their digests too (`docker buildx imagetools inspect IMAGE`).
# The builder and the runtime are the same Debian release (13, trixie), so
# the binaries find the glibc they were linked against.

FROM rust:1.95.0-slim-trixie AS build
WORKDIR /src
COPY . .
# BuildKit caches keep the crate registry and the target directory between
# builds; the binaries are copied out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/grymd target/release/grym-worker target/release/grym /out/

FROM debian:13.1-slim
RUN groupadd --system --gid 10001 grym \
    && useradd --system --uid 10001 --gid grym --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin grym
COPY --from=build /out/grymd /out/grym-worker /out/grym /usr/local/bin/
# The Python workers (workers/python): the SDK with onnxruntime in a venv,
# and the bundled models' packages without torch or TensorFlow.
COPY workers/python /opt/grym-py-src
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/grym-py \
    && /opt/grym-py/bin/pip install --no-cache-dir "/opt/grym-py-src[onnx]" \
    && /opt/grym-py/bin/pip install --no-cache-dir --no-deps silero-vad==6.2.3 basic-pitch==0.4.0 \
    && ln -s /opt/grym-py/bin/grym-py-worker /usr/local/bin/grym-py-worker
# grymd keeps accepted work here (its SQLite store); mount a volume on it,
# or point GRYM_STORE_URL at PostgreSQL.
RUN mkdir -p /var/lib/grym && chown grym:grym /var/lib/grym
ENV GRYM_STORE_URL=sqlite:///var/lib/grym/grym.db
VOLUME /var/lib/grym
USER grym:grym
# The orchestrator's gRPC port, and its Prometheus scrape listener when
# `[metrics] listen = "0.0.0.0:9464"` turns it on (GET /metrics); workers
# listen where `--listen` says.
EXPOSE 50051 9464
# grpc.health.v1 of the default command, grymd: healthy while it can take
# work (its store answers and a model serves). A container that runs a
# worker instead checks that worker's port (docker-compose.yml does:
# `grym health --addr http://127.0.0.1:PORT`); Kubernetes ignores this and
# probes gRPC health itself (deploy/k8s).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["grym", "health", "--addr", "http://127.0.0.1:50051", "--timeout", "3s"]
CMD ["grymd", "--listen", "0.0.0.0:50051"]
