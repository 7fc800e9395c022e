# graphscaler: one image, every stage (`graphscaler scrape | graph | policy | actuate | twin serve`).
#
#   docker build -t graphscaler .
#
# The build compiles librdkafka (rdkafka's bundled copy) and the dataflow crates; expect several
# minutes on a small machine.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin graphscaler

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /graphscaler graphscaler
WORKDIR /graphscaler
COPY --from=build /src/target/release/graphscaler /usr/local/bin/graphscaler
# The twin's topology and traces (twin.topology is relative to the working directory).
COPY data ./data
COPY config ./config
USER 10001
ENTRYPOINT ["graphscaler"]
CMD ["--help"]
