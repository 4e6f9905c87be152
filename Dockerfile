# Build: librdkafka and OpenSSL are compiled from their bundled sources (C toolchain,
# make and perl, all in the Rust image). Both base images are pinned by digest, so a
# rebuild uses the same bytes; move a pin on purpose (Renovate and Dependabot update them).
FROM rust:1.89-bookworm@sha256:948f9b08a66e7fe01b03a98ef1c7568292e07ec2e4fe90d88c07bb14563c84ff AS build
# The git commit for `--version` and build_info (the context has no .git):
#   docker build --build-arg COMM100_BRIDGE_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG COMM100_BRIDGE_COMMIT=unknown
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && strip target/release/comm100-bridge

# Run: a slim image, a non-root user, the spool on a volume (config/default.toml's
# spool.dir), configured by a mounted --config file and COMM100_BRIDGE__* variables. No curl:
# the health check is the binary itself.
FROM debian:bookworm-20250630-slim@sha256:6ac2c08566499cc2415926653cf2ed7c3aedac445675a013cc09469c9e118fdd
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home bridge \
 && mkdir -p /var/lib/comm100-bridge/spool \
 && chown -R 10001:10001 /var/lib/comm100-bridge
COPY --from=build /src/target/release/comm100-bridge /usr/local/bin/comm100-bridge
COPY config/default.toml /etc/comm100-bridge/default.toml
VOLUME /var/lib/comm100-bridge/spool
USER 10001:10001
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s \
  CMD ["comm100-bridge", "healthcheck", "--url", "http://127.0.0.1:9464/healthz"]
# The spool directory is the default spool.dir. Arguments replace `serve`: `docker run IMAGE
# --version`, `docker run IMAGE check-config --config /etc/comm100-bridge/bridge.toml`.
ENTRYPOINT ["comm100-bridge"]
CMD ["serve"]
