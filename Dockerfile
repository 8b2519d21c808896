# syntax=docker/dockerfile:1.7
# helm-guard image: one Rust binary (rustls, no OpenSSL; glibc, jemalloc) on distroless cc, non-root.
#   docker build -t helm-guard:dev .
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# make: jemalloc (the binary's allocator, src/allocator.rs) is built from source. The slim
# toolchain image has gcc but not make; its version does not change the build's output.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crate registry and target/ between builds (the cache-friendly
# part); the binary is copied out of the cached target/ because the mount is not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin helm-guard \
    && install -m 0555 target/release/helm-guard /helm-guard

FROM ${RUNTIME_IMAGE}
COPY --from=build /helm-guard /helm-guard
USER 65532:65532
# 8443: HTTPS admission webhooks; 8080: plain-HTTP /healthz, /readyz, /metrics.
EXPOSE 8443 8080
ENTRYPOINT ["/helm-guard"]
CMD ["serve"]
