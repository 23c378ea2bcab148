//! The OCI image of the DaemonSet (deploy/kubernetes/profiler.yaml), made offline with umoci (Debian's): one layer
//! holding the static binary as `/usr/bin/profiler` (the entrypoint: the DaemonSet gives only `args`), the CA
//! bundle of the build machine's `ca-certificates` (the uploads verify the server against it: the image has no
//! other source of trust), and the empty directories the DaemonSet mounts on. No base image, so no shell, libc or
//! package manager to patch or to be used by whoever gets into the container.
//!
//! It is tagged with its full reference, [`IMAGE_REPOSITORY`]`:VERSION`, the one the DaemonSet names, in
//! `target/dist/oci/` (an OCI image layout) and `profiler_VERSION_oci.tar` (the same layout as one file, what
//! `skopeo copy oci-archive:…` and `ctr images import` read).
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::{binary::StaticBinary, VERSION};
use crate::cmd;

/// The image's name. `localhost/`: it comes from no registry but from `dist` (what podman calls images built on
/// the machine); to pull it from a registry, push it there (`skopeo copy`) and change the DaemonSet's `image:`.
pub const IMAGE_REPOSITORY: &str = "localhost/profiler";

/// The CA certificates of Debian's `ca-certificates`, where rustls-native-certs looks first.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Directories the DaemonSet and the runtime mount on (the root file system is read-only, so they must exist).
const MOUNT_POINTS: [&str; 7] =
    ["proc", "dev", "sys", "tmp", "etc/profiler/secret", "var/lib/profiler/crashes", "usr/bin"];

pub struct Image {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// The layout as a tar archive.
    pub archive: PathBuf,
    /// `IMAGE_REPOSITORY:VERSION`, the layout's tag.
    pub reference: String,
}

pub fn reference() -> String {
    format!("{IMAGE_REPOSITORY}:{VERSION}")
}

pub fn build(out: &Path, binary: &StaticBinary) -> Result<Image> {
    let layout = out.join("oci");
    let bundle = out.join("oci-bundle");
    let reference = reference();
    let image = format!("{}:{reference}", layout.display());
    cmd::run(Command::new("umoci").args(["init", "--layout"]).arg(&layout))?;
    cmd::run(Command::new("umoci").args(["new", "--image", &image]))?;
    let mut unpack = Command::new("umoci");
    unpack.arg("unpack");
    if !cmd::is_root() {
        unpack.arg("--rootless");
    }
    cmd::run(unpack.args(["--image", &image]).arg(&bundle))?;

    let rootfs = bundle.join("rootfs");
    for dir in MOUNT_POINTS.iter().chain(&["etc/ssl/certs"]) {
        let dir = rootfs.join(dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let copy = |from: &Path, to: &str, mode: u32| -> Result<()> {
        let to = rootfs.join(to);
        fs::copy(from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", to.display()))
    };
    copy(&binary.stripped, "usr/bin/profiler", 0o755)?;
    copy(Path::new(CA_BUNDLE), "etc/ssl/certs/ca-certificates.crt", 0o644)
        .context("the image needs the CA bundle of Debian's ca-certificates")?;

    let mut repack = Command::new("umoci");
    repack.args(["repack", "--image", &image]).arg(&bundle);
    cmd::run(&mut repack)?;
    cmd::run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--config.entrypoint",
        "/usr/bin/profiler",
        "--config.workingdir",
        "/",
        "--config.label",
        "org.opencontainers.image.title=profiler",
        "--config.label",
        &format!("org.opencontainers.image.version={VERSION}"),
    ]))?;
    // The blobs of the intermediate manifests and configs.
    cmd::run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;
    fs::remove_dir_all(&bundle).with_context(|| format!("removing {}", bundle.display()))?;

    let archive = out.join(format!("profiler_{VERSION}_oci.tar"));
    cmd::run(Command::new("tar").arg("--create").arg("--file").arg(&archive).arg("--directory").arg(&layout).arg("."))?;
    Ok(Image { layout, archive, reference })
}
