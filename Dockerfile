# Build: a release binary in the Rust image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY lua lua
COPY sql sql
COPY benches benches
RUN cargo build --release --locked --bin flashsale

# Run: slim Debian, non-root, curl only for the health check.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin flashsale \
 && mkdir -p /app/logs && chown flashsale /app/logs
WORKDIR /app
COPY --from=build /src/target/release/flashsale /usr/local/bin/flashsale
COPY log4rs.yaml /app/log4rs.yaml
USER flashsale
ENV FLASHSALE_BIND=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["flashsale"]
