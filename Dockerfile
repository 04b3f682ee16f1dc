# Chronicle: one binary. Build: docker build -t chronicle .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin chronicle

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/chronicle chronicle \
    && mkdir -p /var/lib/chronicle && chown chronicle /var/lib/chronicle
COPY --from=build /src/target/release/chronicle /usr/local/bin/chronicle
COPY plans.json /etc/chronicle/plans.json
USER chronicle
ENV BIND=0.0.0.0:8080 DATA_DIR=/var/lib/chronicle PLANS_FILE=/etc/chronicle/plans.json
EXPOSE 8080
ENTRYPOINT ["chronicle"]
CMD ["serve"]
