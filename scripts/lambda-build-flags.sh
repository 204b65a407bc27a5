# Sourced by the scripts that build the functions as deployed (scripts/package.sh, scripts/bench.sh).
#
# Position-dependent executables (`-C relocation-model=static`): a position-independent one is
# relocated by the dynamic loader at every start, 22,000-27,000 relative relocations in a
# function against 7,000 in a hello-world, each page of its `.data.rel.ro` copied on write: about
# a third of a function's init over the baseline's (docs/PERFORMANCE.md). What this gives up is
# ASLR of the executable's own image (libraries, stack, heap and mappings stay randomised); see
# docs/SECURITY.md.
#
# Set per target triple, so only builds that name their target (`cargo lambda build --arm64`,
# `--target ...`, what `sam build` runs) take it: with an explicit target, build scripts and proc
# macros are built for the host without it (a proc macro cannot link position-dependent), and a
# plain `cargo build`/`cargo test` is unchanged.
lambda_rustflags="-C relocation-model=static"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS:-$lambda_rustflags}"
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="${CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS:-$lambda_rustflags}"
