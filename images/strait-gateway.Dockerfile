# syntax=docker/dockerfile:1
# strait-gateway: WireGuard endpoint and gateway-side eBPF (one Deployment per peer)
# Built from the repository root: see `cargo xtask images --print`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The eBPF programs are built by build.rs with nightly and bpf-linker, which
# must link with nightly's own LLVM (as xtask/src/bootstrap.rs does on hosts).
RUN rustup toolchain install nightly --profile minimal --component rust-src \
 && llvm=$(ls "$(rustc +nightly --print sysroot)"/lib/libLLVM.so.*-rust-*) \
 && major=$(basename "$llvm" | sed -E 's/^libLLVM\.so\.([0-9]+).*/\1/') \
 && mkdir -p /opt/strait-llvm/lib \
 && ln -s "$llvm" /opt/strait-llvm/lib/libLLVM.so \
 && ln -s "$llvm" /opt/strait-llvm/lib/$(basename "$llvm") \
 && LLVM_PREFIX=/opt/strait-llvm cargo +nightly install --locked bpf-linker \
      --no-default-features --features llvm-$major
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin strait-gateway \
 && install -D target/release/strait-gateway /out/strait-gateway

# Root in its own network namespace: WireGuard and TC need NET_ADMIN and
# BPF there, which the chart's template grants (not privileged).
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/strait-gateway /usr/local/bin/strait-gateway
ENTRYPOINT ["/usr/local/bin/strait-gateway"]
