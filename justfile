# mat: reproduce and stress-test Manifold-Aware Training.
# Every recipe builds with `--release`: tests and binaries share one optimised
# profile, so the dependency tree is compiled once.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Everything CI runs: formatting, lints with warnings denied, all tests.
test: fmt-check lint
    cargo test --release --workspace

# The slow checks that the quick profile's adversarial budgets hold: AT,
# TRADES and MAT (SO + BIBO) keep >= 60% under PGD-40 at eps 0.3 on the
# MNIST subset (about 15 minutes on 2 cores; not part of `test`).
test-robust:
    cargo test --release -p mat-train --test robustness -- --ignored --test-threads 1 --nocapture

# Models saved here load into the reference PyTorch modules and give the
# same logits (SmallCNN, WideResNet). Installs PyTorch from PyPI if missing
# (too large for CI, so not part of `test`); fails where it cannot import it.
test-torch:
    python3 -c "import torch, safetensors, numpy" 2>/dev/null || python3 -m pip install --quiet torch safetensors numpy
    cargo test --release --test torch_interop -- --ignored --nocapture

# Regenerate a table or figure of the paper: builds the stage programs once,
# then runs the pipeline's stages whose inputs changed (runs/TABLE/PROFILE/).
# TABLE: table1 ... table5, figure1, figure2, or all. Profiles: quick (CPU),
# smoke (seconds; numbers meaningless), paper (GPU: `just build-cuda`, then
# target/cuda/release/mat repro, see README). Runs as many independent
# stages at once as the machine has cores, sharing them (`--jobs 1` in ARGS
# runs one at a time).
reproduce TABLE profile="quick" *ARGS:
    cargo build --release --workspace --bins
    ./target/release/mat repro pipelines/{{TABLE}}.yaml --profile {{profile}} --jobs {{num_cpus()}} {{ARGS}}

# Every stage program with `--features cuda`, on a machine without a GPU or
# a CUDA toolkit: installs NVIDIA's CUDA 13.0 wheels from PyPI into .cuda/
# and builds into target/cuda/release/ for compute capability CAP (90:
# H100/H200; 80: A100; 89: L4/RTX 4090). See README, "Devices".
build-cuda cap="90":
    scripts/build-cuda {{cap}}

# On a machine with a CUDA GPU (after `just build-cuda` there, or with
# target/cuda/gpu/ copied from one): CPU/CUDA parity and speed beside
# PyTorch on the same GPU; writes $OUT/gpu-check.md (default gpu-check-out/).
gpu-check:
    scripts/gpu-check target/cuda/gpu

# Format the code.
fmt:
    cargo fmt --all

# Check formatting without changing files.
fmt-check:
    cargo fmt --all --check

# Clippy over every target, warnings are errors.
lint:
    cargo clippy --release --workspace --all-targets -- -D warnings

# Fetch a dataset into data/cache/ (official URLs, or `just data NAME --from DIR`).
data NAME *ARGS:
    cargo run --release --quiet -- data fetch {{NAME}} {{ARGS}}

# Show which datasets are present.
datasets:
    cargo run --release --quiet -- data list

# Print an artifact's schema, metadata and summary.
inspect FILE:
    cargo run --release --quiet -- inspect {{FILE}}

# mat's AutoAttack runs beside torchattacks' members on the same weights with
# the same budget (AutoAttack's 100 steps, not the 10 that torchattacks' own
# `AutoAttack` class gives them). PyTorch and torchattacks are installed
# from PyPI if missing (torchattacks without its declared dependencies: it
# pins an old `requests` that it does not import, and needs no torchvision
# to run). Every workload runs RUNS times per side but SmallCNN training,
# TRAIN_RUNS times, PyTorch's from a fresh process every third run, and
# each PyTorch PGD-40 run gets a fresh process (its speed differs per
# process).
# Throughput of mat beside PyTorch CPU (same data, threads); writes BENCHMARKS.md.
bench threads="2" runs="3" train_runs="9":
    python3 -c "import torch, numpy" 2>/dev/null || python3 -m pip install --quiet torch numpy
    python3 -c "import torchattacks, safetensors" 2>/dev/null || { python3 -m pip install --quiet scipy tqdm safetensors && python3 -m pip install --quiet --no-deps torchattacks; }
    RAYON_NUM_THREADS={{threads}} cargo bench -p mat-core --bench throughput -- --runs {{runs}} --train-runs {{train_runs}}
