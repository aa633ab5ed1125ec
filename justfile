# Phoenix — everyday commands. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Everything CI runs (the README's test command): lints, images where buildah installs, all tests.
# The images come first so that the tests running them (helm install of the chart with the operator
# in-cluster, the pod runner's image pods, tests/images.rs) run under PHOENIX_REQUIRE_IMAGES=1 and
# fail rather than skip; running an image needs root (chroot), as on CI.
test: lint build-e2e
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --workspace --bins
    if command -v buildah >/dev/null 2>&1 || { [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; }; then
      scripts/images.sh
      if [[ $(id -u) == 0 ]]; then
        export PHOENIX_REQUIRE_IMAGES=1
      else
        echo "test: images built, but running them needs root: the in-cluster (helm) tests skip" >&2
      fi
    else
      echo "test: images NOT built: no buildah, and apt-get cannot install it here; image tests skip" >&2
    fi
    # A failing test prints its panic message and its operator's last log lines, not a backtrace:
    # CI keeps only part of the output. PHOENIX_TEST_BACKTRACE=1 brings backtraces back.
    RUST_BACKTRACE="${PHOENIX_TEST_BACKTRACE:-0}" PHOENIX_REQUIRE_E2E=1 \
      cargo test --workspace --lib --bins --tests -- --test-threads=8

# Every test but the end-to-end suite (no control plane): the libraries, binaries and every
# integration-test file of the workspace (listed from the tree, so a new one cannot be left out).
test-unit:
    #!/usr/bin/env bash
    set -euo pipefail
    targets=()
    for f in tests/*.rs */tests/*.rs; do targets+=(--test "$(basename "$f" .rs)"); done
    cargo test --workspace --lib --bins "${targets[@]}"

# Build (or reuse from ~/.cache/phoenix-e2e) etcd, kube-*, kubectl, kwok, the collector; install Prometheus.
build-e2e:
    tests/e2e/build.sh

# Start the local control plane; target/e2e/env then holds KUBECONFIG=… and PROMETHEUS_URL=….
cluster-up:
    tests/e2e/cluster.sh up

# Stop the local control plane and remove its data.
cluster-down:
    tests/e2e/cluster.sh down

# Install the CRDs into the local cluster and run the operator in the foreground against it.
run:
    #!/usr/bin/env bash
    set -euo pipefail
    set -a; source target/e2e/env; set +a
    "$KUBECTL" apply --server-side --force-conflicts -f crds/
    exec cargo run --bin phoenix-operator -- --prometheus-url "$PROMETHEUS_URL" --http-addr 127.0.0.1:8080

# Regenerate crds/ from the Rust types.
crds:
    cargo run --quiet --bin crdgen -- crds
    cp crds/*.yaml charts/phoenix/crds/

# A real Experiment end to end on this machine: control plane, operator, collectors, load, verdict.
demo: build-e2e
    scripts/demo.sh

# Benchmarks (print their figures).
bench: build-e2e
    scripts/bench.sh

# The verdict study: the real analysis over many synthetic runs; prints docs/verdict.md's table (~2 min).
verdict-study runs="1000" seed="1" duration_mins="10":
    cargo run --quiet --example verdict_study -- --runs {{runs}} --seed {{seed}} --duration-mins {{duration_mins}}

# Images as OCI archives target/images/phoenix-{operator,simulator}.tar (buildah, no daemon), checked.
images:
    scripts/images.sh
    PHOENIX_REQUIRE_IMAGES=1 cargo test --test images

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
