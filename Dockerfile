# ecgfed container image: one image for every party of the federation (ledger, gateways,
# trainer, auditor); docker-compose.yml picks the subcommand per service. deploy/README.md has
# the layout and how to run it.
#
# Plain Dockerfile syntax (no BuildKit-only features), so the classic builder builds it too.

# The workspace's rust-version is 1.90; TOOLCHAIN.md checked the dependency set with 1.95.
ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------------------------
# Builder: Debian 12 with the Rust toolchain. scripts/setup.sh installs what the build needs
# (protoc, clang/libclang, python3-venv, the torch 2.13.0 wheel in .venv-torch whose libtorch
# tch links); it runs as root here, so it calls apt-get without sudo.
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# The set-up script alone first: its layer (about 5 GB, mostly the torch wheel) stays cached
# while only the sources change.
COPY scripts/setup.sh scripts/setup.sh
RUN scripts/setup.sh && rm -rf "$HOME/.cache/pip"

COPY . .
# .cargo/config.toml points torch-sys at .venv-torch/libtorch; the build records that folder's
# lib/ as the binary's run path (build-support/torch_rpath.rs), which does not exist in the
# runtime image: the runtime stage sets LD_LIBRARY_PATH instead.
RUN cargo build --release --locked -p ecgfed \
 && mkdir -p /stage/lib \
 && cp target/release/ecgfed /stage/ecgfed \
 && strip /stage/ecgfed

# Stage exactly the shared libraries that the binary loads from the venv (libtorch_cpu, libc10,
# torch's own libgomp, and the CUDA runtime and CUPTI that libtorch_cpu needs even on CPU, from
# the wheel's nvidia/ folder), flattened into one folder; the system libraries come from the
# runtime image's Debian.
RUN ldd /stage/ecgfed \
  | awk '$2 == "=>" && $3 ~ "^/src/" { print $3 }' \
  | sort -u \
  | xargs -r cp -L -t /stage/lib/ \
 && test -f /stage/lib/libtorch_cpu.so \
 && ls -l /stage/lib

# ---------------------------------------------------------------------------------------------
# Runtime: Debian 12 slim, same glibc as the builder.
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libstdc++6 libgcc-s1 openssl \
 && rm -rf /var/lib/apt/lists/*

# Non-root user. The state folders exist in the image owned by that user, so that the named
# volumes mounted over them (docker-compose.yml) start out writable by it.
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/ecgfed --no-create-home \
      --shell /usr/sbin/nologin ecgfed \
 && install -d -o ecgfed -g ecgfed -m 0750 /var/lib/ecgfed \
      /var/lib/ecgfed/ledger /var/lib/ecgfed/site-a /var/lib/ecgfed/site-b \
      /var/lib/ecgfed/site-c /var/lib/ecgfed/trainer /var/lib/ecgfed/regulator

COPY --from=builder /stage/lib/ /opt/ecgfed/lib/
COPY --from=builder /stage/ecgfed /usr/local/bin/ecgfed
ENV LD_LIBRARY_PATH=/opt/ecgfed/lib

# The federation's topology and cohort spec (docker-compose.yml bind-mounts ./deploy over it,
# so edits there need no rebuild), and the embedded real-data sample the hospitals ingest.
COPY deploy/ /etc/ecgfed/
COPY datasets/sample/ /opt/ecgfed/sample/

# Fail the build here, not at first start, when a library is missing.
RUN if ldd /usr/local/bin/ecgfed | grep 'not found'; then exit 1; fi \
 && ecgfed --version

USER ecgfed
WORKDIR /var/lib/ecgfed
# Ledger and the three gateways of deploy/topology.toml.
EXPOSE 7400 7501 7502 7503
ENTRYPOINT ["ecgfed"]
CMD ["--help"]
