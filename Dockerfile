# graphscaler's images, one Dockerfile, two targets:
#
#   docker build --target slim -t graphscaler:slim .    # scrape, graph, actuate, twin serve: no libtorch
#   docker build -t graphscaler:local .                 # every stage, the learned policies, train
#
# The slim image holds `graphscaler` built without the `learn` feature (no libtorch, no model
# weights); the full image adds `graphscaler-learn` (which `graphscaler` re-executes for a learned
# policy or training), libtorch's shared libraries and the shipped checkpoints. Both compile
# librdkafka (rdkafka's bundled copy) and the dataflow crates; the full one links libtorch from the
# torch==2.13.0 wheel (as scripts/setup.sh does): expect several minutes and a few GB.
FROM rust:1.95-bookworm AS build-slim
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --no-default-features --bin graphscaler

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config python3-venv && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN python3 -m venv .venv && .venv/bin/pip install --no-cache-dir torch==2.13.0 \
    && ln -sfn "$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" .venv/torch \
    && mkdir -p /opt/libtorch && cp -rL .venv/torch/lib /opt/libtorch/lib
RUN cargo build --release --locked --bin graphscaler --bin graphscaler-learn

FROM debian:bookworm-slim AS slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /graphscaler graphscaler
WORKDIR /graphscaler
COPY --from=build-slim /src/target/release/graphscaler /usr/local/bin/graphscaler
# Topologies and traces to name by path (Online Boutique and the bursty-mix trace are compiled in).
COPY data ./data
COPY config ./config
USER 10001
ENTRYPOINT ["graphscaler"]
CMD ["--help"]

FROM slim AS full
USER root
COPY --from=build /src/target/release/graphscaler /usr/local/bin/graphscaler
COPY --from=build /src/target/release/graphscaler-learn /usr/local/bin/graphscaler-learn
# libtorch's shared libraries (the binary's rpath points into the build stage's venv).
COPY --from=build /opt/libtorch/lib /opt/libtorch/lib
ENV LD_LIBRARY_PATH=/opt/libtorch/lib
# The shipped learned policies (learn.checkpoint_dir = "checkpoints").
COPY checkpoints ./checkpoints
USER 10001
