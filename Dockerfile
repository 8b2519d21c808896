# syntax=docker/dockerfile:1.7
# helm-guard image: one Rust binary (rustls, no OpenSSL; glibc) on distroless cc, non-root.
#   docker build -t helm-guard:dev .
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
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
