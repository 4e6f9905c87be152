# Build: librdkafka is compiled from its bundled sources (needs a C toolchain, make, perl).
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

# Run: a slim image with a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home bridge \
 && mkdir -p /var/lib/comm100-bridge/spool \
 && chown -R 10001 /var/lib/comm100-bridge
COPY --from=build /src/target/release/comm100-bridge /usr/local/bin/comm100-bridge
VOLUME /var/lib/comm100-bridge/spool
USER 10001
EXPOSE 8080
ENTRYPOINT ["comm100-bridge"]
CMD ["serve"]
