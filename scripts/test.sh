#!/usr/bin/env bash
# The whole test suite: unit, golden, property and namespace tests (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
rampart_need_root
rampart_need_rust
RAMPART_EXTRA_PACKAGES=$RAMPART_TEST_PACKAGES rampart_install_packages
# Tests that build namespaces run one at a time within a test binary where they say so; the
# default test parallelism stays on for the pure tests.
exec cargo test --workspace --locked "$@"
