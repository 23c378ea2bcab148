//! Step 1 of `cargo xtask kernels`: a distribution's kernel image, fetched with a private apt configuration (no
//! change to this machine's apt state) and cached under [`CACHE_DIR`] with a stamp naming the recipe and the package.
use std::{
    fs,
    os::unix::io::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use super::{Archive, Kernel, CACHE_DIR};
use crate::cmd;

/// Bumped when the way a kernel is fetched or unpacked changes, so cached kernels are fetched again.
const RECIPE_VERSION: u32 = 1;

/// Ubuntu's archive keyring, as tests/python_support.rs fetches and checks it for the debootstrap roots (same
/// place, same digest: one download serves both).
const UBUNTU_KEYRING_DIR: &str = "/var/cache/profiler-roots/ubuntu-keyring";
const UBUNTU_KEYRING_URL: &str =
    "http://archive.ubuntu.com/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2021.03.26_all.deb";
const UBUNTU_KEYRING_SHA256: &str = "1a4dd63e5c76728960a2edddae22e2e0fc53df8e8b87806deb971030ac704eb0";
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The kernel image of `kernel` under [`CACHE_DIR`], fetched when missing or fetched by another recipe.
pub(super) fn ensure_kernel(kernel: &Kernel) -> Result<PathBuf> {
    let dir = Path::new(CACHE_DIR).join(kernel.name);
    let vmlinuz = dir.join("vmlinuz");
    let stamp = dir.join("stamp");
    let recipe = format!("recipe {RECIPE_VERSION}: {:?} {} {}\n", kernel.archive, kernel.suites.join(","), kernel.meta);
    let ready = || vmlinuz.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s.starts_with(&recipe));
    if ready() {
        return Ok(vmlinuz);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = FileLock::acquire(&dir.join("lock"))?;
    if ready() {
        return Ok(vmlinuz);
    }
    eprintln!("kernels: fetching {} ({} from {})", kernel.label, kernel.meta, kernel.suites.join(", "));
    let apt = PrivateApt::new(kernel, &dir.join("apt"))?;
    apt.update()?;
    let package = apt.kernel_package(kernel.meta)?;
    let download = dir.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    apt.download(&package, &download)?;
    let deb = only_file(&download, ".deb")?;
    let unpacked = download.join("unpacked");
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let image = only_file(&unpacked.join("boot"), "")
        .with_context(|| format!("{} holds no kernel image in /boot", deb.display()))?;
    fs::copy(&image, &vmlinuz).with_context(|| format!("copying {} to {}", image.display(), vmlinuz.display()))?;
    let deb_name = deb.file_name().unwrap_or_default().to_string_lossy().into_owned();
    fs::remove_dir_all(&download).with_context(|| format!("removing {}", download.display()))?;
    fs::write(&stamp, format!("{recipe}{deb_name}\n")).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(vmlinuz)
}

/// The one file in `dir` whose name starts with `vmlinuz` (when `suffix` is empty) or ends with `suffix`.
fn only_file(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let wanted = if suffix.is_empty() { name.starts_with("vmlinuz") } else { name.ends_with(suffix) };
        if wanted {
            found.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([path]) => Ok(path),
        Err(found) => bail!(
            "expected one {} in {}, found {found:?}",
            if suffix.is_empty() { "vmlinuz*" } else { suffix },
            dir.display()
        ),
    }
}

/// apt with its own lists, cache and sources: reads another release's archive without touching this machine's apt
/// state (Dir::State::status is empty, so nothing counts as installed).
struct PrivateApt {
    options: Vec<String>,
}

impl PrivateApt {
    fn new(kernel: &Kernel, dir: &Path) -> Result<PrivateApt> {
        let state = dir.join("state");
        let cache = dir.join("cache");
        for sub in [state.join("lists/partial"), cache.join("archives/partial")] {
            fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        let (mirror, keyring) = match kernel.archive {
            Archive::Debian => ("http://deb.debian.org/debian", PathBuf::from(DEBIAN_KEYRING)),
            Archive::Ubuntu => ("http://archive.ubuntu.com/ubuntu", ubuntu_keyring()?),
        };
        let sources: String = kernel
            .suites
            .iter()
            .map(|suite| format!("deb [signed-by={}] {mirror} {suite} main\n", keyring.display()))
            .collect();
        let list = dir.join("sources.list");
        fs::write(&list, sources).with_context(|| format!("writing {}", list.display()))?;
        let empty_status = dir.join("status");
        fs::write(&empty_status, "").with_context(|| format!("writing {}", empty_status.display()))?;
        let options = [
            format!("Dir::State={}", state.display()),
            format!("Dir::State::status={}", empty_status.display()),
            format!("Dir::Cache={}", cache.display()),
            format!("Dir::Etc::SourceList={}", list.display()),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            "APT::Architecture=amd64".to_owned(),
            // Downloads land in a directory of root's; apt's sandbox user could not write there.
            "APT::Sandbox::User=root".to_owned(),
        ];
        Ok(PrivateApt { options: options.iter().flat_map(|o| ["-o".to_owned(), o.clone()]).collect() })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(&self.options);
        cmd
    }

    fn update(&self) -> Result<()> {
        cmd::run(self.command("apt-get").args(["-q", "update"]))
    }

    /// The `linux-image-*` package `meta` depends on.
    fn kernel_package(&self, meta: &str) -> Result<String> {
        let mut depends = self.command("apt-cache");
        depends.args(["depends", meta]);
        let output = depends.output().with_context(|| format!("running `{}`", cmd::display(&depends)))?;
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("Depends: "))
            .find(|package| package.starts_with("linux-image-"))
            .map(str::to_owned)
            .with_context(|| format!("`{}` names no linux-image-* package:\n{text}", cmd::display(&depends)))
    }

    fn download(&self, package: &str, into: &Path) -> Result<()> {
        cmd::run(self.command("apt-get").current_dir(into).args(["-q", "download", package]))
    }
}

/// Ubuntu's archive keyring, fetched once and checked against [`UBUNTU_KEYRING_SHA256`].
fn ubuntu_keyring() -> Result<PathBuf> {
    let dir = Path::new(UBUNTU_KEYRING_DIR);
    let keyring = dir.join("usr/share/keyrings/ubuntu-archive-keyring.gpg");
    if !keyring.exists() {
        let parent = dir.parent().context("the keyring directory has a parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let deb = parent.join("ubuntu-keyring.deb");
        cmd::run(Command::new("curl").args(["-fsSL", "--retry", "3", "-o"]).arg(&deb).arg(UBUNTU_KEYRING_URL))?;
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir))?;
    }
    let output = Command::new("sha256sum").arg(&keyring).output().context("running sha256sum")?;
    let digest = String::from_utf8_lossy(&output.stdout);
    if digest.split_whitespace().next() != Some(UBUNTU_KEYRING_SHA256) {
        bail!(
            "{} does not have the expected SHA-256 ({UBUNTU_KEYRING_SHA256}): {digest}; remove {} to fetch it again",
            keyring.display(),
            dir.display()
        );
    }
    Ok(keyring)
}

/// An exclusive `flock` on a file, held until dropped.
struct FileLock(fs::File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; it has no memory-safety preconditions.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("locking {}: {}", path.display(), std::io::Error::last_os_error());
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
