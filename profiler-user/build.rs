//! Builds the kernel programs (profiler-ebpf) for the BPF target and leaves the object in OUT_DIR, where
//! `include_bytes_aligned!` embeds it into the `profiler` binary.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "profiler-ebpf")
        .ok_or_else(|| anyhow!("profiler-ebpf package not found in the workspace"))?;
    let root_dir =
        ebpf.manifest_path.parent().ok_or_else(|| anyhow!("profiler-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), ..Default::default() }],
        Toolchain::default(),
    )
    .context("building the eBPF programs failed; run `cargo xtask setup` to install bpf-linker and rust-src")
}
