# syntax=docker/dockerfile:1
# strait-virtual-kubelet: one per VirtualNode (Deployment)
# Built from the repository root: see `cargo xtask images --print`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Host-only build: this binary embeds no eBPF object.
ENV AYA_BUILD_SKIP=1
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin strait-virtual-kubelet \
 && install -D target/release/strait-virtual-kubelet /out/strait-virtual-kubelet

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/strait-virtual-kubelet /usr/local/bin/strait-virtual-kubelet
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/strait-virtual-kubelet"]
