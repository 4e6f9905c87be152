# Build: librdkafka and OpenSSL are compiled from their bundled sources (C toolchain,
# make and perl, all in the Rust image).
FROM rust:1.89-bookworm AS build
# The git commit for `--version` and build_info (the context has no .git):
#   docker build --build-arg COMM100_BRIDGE_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG COMM100_BRIDGE_COMMIT=unknown
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && strip target/release/comm100-bridge

# Run: a slim image, a non-root user, the spool on a volume (config/default.toml's
# spool.dir), configured by a mounted --config file and COMM100_BRIDGE__* variables.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home bridge \
 && mkdir -p /var/lib/comm100-bridge/spool \
 && chown -R 10001:10001 /var/lib/comm100-bridge
COPY --from=build /src/target/release/comm100-bridge /usr/local/bin/comm100-bridge
COPY config/default.toml /etc/comm100-bridge/default.toml
VOLUME /var/lib/comm100-bridge/spool
USER 10001:10001
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD curl -fsS http://127.0.0.1:9464/healthz >/dev/null || exit 1
# The spool directory is the default spool.dir. Arguments replace `serve`: `docker run IMAGE
# --version`, `docker run IMAGE check-config --config /etc/comm100-bridge/bridge.toml`.
ENTRYPOINT ["comm100-bridge"]
CMD ["serve"]
