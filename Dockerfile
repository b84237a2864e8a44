# dict-server as a container image (used by docker-compose.yml).
#
#   docker build -t dict-rs .
#   docker run -v $PWD/deploy/dict-rs:/etc/dict-rs:ro -v dict-socket:/run/dict-rs dict-rs
#
# Stage 1 builds the release binary with the workspace's locked dependencies; stage 2 is
# Debian 12 (the distribution the project is tested on) with only that binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p dict-server \
    && install -m 0755 target/release/dict-server /usr/local/bin/dict-server

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/dict-rs --create-home --shell /usr/sbin/nologin dict-rs \
    # the socket directory; a named volume mounted here starts with this owner
    && install -d -o dict-rs -g dict-rs -m 0755 /run/dict-rs
COPY --from=build /usr/local/bin/dict-server /usr/local/bin/dict-server
USER dict-rs
WORKDIR /var/lib/dict-rs
# the Prometheus endpoint, when [metrics] listen is set
EXPOSE 9137
ENTRYPOINT ["dict-server"]
CMD ["--config", "/etc/dict-rs/dict-rs.toml"]
