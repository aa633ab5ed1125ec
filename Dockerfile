# syntax=docker/dockerfile:1
# The Phoenix image: phoenix-operator (the entrypoint) and phoenix-simulator (run by the simulator
# Jobs with `command: [phoenix-simulator]`), both static musl binaries on distroless, as user 65532.
#
#   docker build -t ghcr.io/phoenix-operator/phoenix:0.1.0 .
#
# TLS is rustls with aws-lc-rs: aws-lc-sys ships pregenerated bindings for x86_64-unknown-linux-musl
# and compiles AWS-LC's C sources with the cc crate, so the builder needs a musl C compiler
# (musl-gcc from musl-tools); cmake and clang are there for its cmake/bindgen fallback.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-trixie AS builder
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake clang \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=musl-gcc \
    CARGO_TERM_COLOR=never
WORKDIR /src
# The whole manifest's targets must exist for cargo to load it (tests/ included); .dockerignore
# keeps target/ and the rest out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "${TARGET}" \
        --bin phoenix-operator --bin phoenix-simulator \
 && mkdir -p /out \
 && cp "target/${TARGET}/release/phoenix-operator" "target/${TARGET}/release/phoenix-simulator" /out/

FROM gcr.io/distroless/static:nonroot
LABEL org.opencontainers.image.source="https://github.com/phoenix-operator/phoenix" \
      org.opencontainers.image.description="Phoenix operator and process simulator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/phoenix-operator /out/phoenix-simulator /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/phoenix-operator"]
