# walpipe: a release build in a slim Debian image.
FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
RUN cargo build --release --locked --bin walpipe

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/walpipe /usr/local/bin/walpipe
USER 65534:65534
ENV WALPIPE_HTTP_ADDR=0.0.0.0:9898
EXPOSE 9898
ENTRYPOINT ["/usr/local/bin/walpipe"]
CMD ["run"]
