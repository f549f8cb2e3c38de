# Build stage: a release binary against the same Debian release as the runtime image.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
# Workspace members: cargo reads their manifests to build anything; the image ships neither.
COPY bench ./bench
COPY testkit ./testkit
RUN cargo build --release --locked --bin erasure

# Runtime stage: the binary, its configuration, CA certificates for TLS, and nothing else.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin erasure
WORKDIR /app
COPY --from=build /src/target/release/erasure /usr/local/bin/erasure
COPY config ./config
USER 10001
ENV ERASURE_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
# `erasure run`: migrate, declare the topology, consume until SIGTERM.
ENTRYPOINT ["/usr/local/bin/erasure"]
CMD ["run"]
