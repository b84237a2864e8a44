# dict-server as a container image (used by docker-compose.yml), from a binary built on
# the host: a cargo build inside the image would take many minutes and need crates.io.
#
#   cargo build --release --locked -p dict-server
#   docker build -t dict-rs:latest .
#   docker run -v $PWD/deploy/dict-rs:/etc/dict-rs:ro -v dict-socket:/run/dict-rs dict-rs
#
# DICT_SERVER_BIN is the binary's path in the repository (the build context; .dockerignore
# lets only target/{release,debug}/dict-server in). It must be built for Debian 12 (glibc
# 2.36 or older), as on the Debian 12 machine the project is tested on.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/dict-rs --create-home --shell /usr/sbin/nologin dict-rs \
    # the socket directory; a named volume mounted here starts with this owner
    && install -d -o dict-rs -g dict-rs -m 0755 /run/dict-rs
ARG DICT_SERVER_BIN=target/release/dict-server
COPY ${DICT_SERVER_BIN} /usr/local/bin/dict-server
USER dict-rs
WORKDIR /var/lib/dict-rs
# the Prometheus endpoint, when [metrics] listen is set
EXPOSE 9137
ENTRYPOINT ["dict-server"]
CMD ["--config", "/etc/dict-rs/dict-rs.toml"]
