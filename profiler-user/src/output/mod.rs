//! Writes a recording to a local file in the format its name asks for (flame graph SVG, pprof, folded stacks).
//!
//! Files are replaced atomically (temporary file in the same directory, then rename), so a viewer never sees half
//! a file and an old profile survives a failed write; `check_writable` lets the CLI find a bad path before
//! recording for 30 s rather than after.

pub(crate) mod flamegraph;
pub(crate) mod folded;
pub(crate) mod group;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, ensure, Context as _};

use crate::aggregate::{Profile, ProfileKind};
use crate::pprof;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// Interactive flame graph (`.svg`).
    FlameGraphSvg,
    /// Gzipped pprof protobuf (`.pb.gz`, `.pprof`, `.pb`).
    Pprof,
    /// Folded stacks, one `root;…;leaf count` line per stack (`.folded`, `.txt`).
    Folded,
}

const SUPPORTED: &str = ".svg (flame graph), .pb.gz, .pprof or .pb (pprof), .folded or .txt (folded stacks)";

impl OutputFormat {
    /// The format a file name asks for, by extension, ignoring case.
    ///
    /// pprof is always written gzipped, `.pb` included: the pprof spec stores profiles gzipped, Go's
    /// runtime/pprof writes them so, and every reader (go tool pprof, Pyroscope, speedscope) sniffs the gzip
    /// magic, so one pprof flavour is enough.
    pub(crate) fn from_path(path: &Path) -> anyhow::Result<OutputFormat> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        let has = |ext: &str| name.len() > ext.len() && name.ends_with(ext);
        if has(".svg") {
            Ok(OutputFormat::FlameGraphSvg)
        } else if has(".pb.gz") || has(".pprof") || has(".pb") {
            Ok(OutputFormat::Pprof)
        } else if has(".folded") || has(".txt") {
            Ok(OutputFormat::Folded)
        } else {
            bail!("cannot tell the output format of {}: name it *{SUPPORTED}", path.display())
        }
    }
}

/// Where a profile of `kind` goes when the user named `path`: the first kind asked for takes the path itself, the
/// others get their name before the extension (`profile.pb.gz` → `profile.off-cpu.pb.gz`).
pub(crate) fn path_for(path: &Path, kind: ProfileKind, first: bool) -> PathBuf {
    if first {
        return path.to_owned();
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let extension_at = [".pb.gz", ".pprof", ".pb", ".svg", ".folded", ".txt"]
        .iter()
        .find(|ext| lower.len() > ext.len() && lower.ends_with(*ext))
        .map_or(name.len(), |ext| name.len() - ext.len());
    let (stem, extension) = name.split_at(extension_at);
    path.with_file_name(format!("{stem}.{}{extension}", kind.name()))
}

/// Renders `profile` as `format` and puts it at `path`, replacing any file there. `title` heads the flame graph.
pub(crate) fn write_profile(profile: &Profile, path: &Path, format: OutputFormat, title: &str) -> anyhow::Result<()> {
    render(profile, format, title)
        .and_then(|bytes| write_atomically(path, &bytes))
        .with_context(|| format!("could not write the profile to {}", path.display()))
}

/// Fails unless a file can be created next to `path`, by creating and removing one.
pub(crate) fn check_writable(path: &Path) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    let meta = fs::metadata(dir).with_context(|| format!("output directory {} is not usable", dir.display()))?;
    ensure!(meta.is_dir(), "output directory {} is not a directory", dir.display());
    ensure!(!path.is_dir(), "output path {} is a directory, not a file name", path.display());
    let probe = temp_path(path)?;
    File::options()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| format!("cannot create files in output directory {}", dir.display()))?;
    fs::remove_file(&probe).with_context(|| format!("removing the probe file {}", probe.display()))
}

/// Renders `profile` as `format`, in memory.
pub(crate) fn render(profile: &Profile, format: OutputFormat, title: &str) -> anyhow::Result<Vec<u8>> {
    Ok(match format {
        OutputFormat::FlameGraphSvg => {
            let mut svg = Vec::new();
            flamegraph::write_svg(profile, title, &mut svg)?;
            svg
        }
        OutputFormat::Pprof => pprof::encode_gzip(profile)?,
        OutputFormat::Folded => folded::render(profile).into_bytes(),
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path)?;
    let result = write_and_rename(&tmp, path, bytes);
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_and_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    // Without this a crash soon after the rename can leave an empty file under the final name.
    file.sync_all().with_context(|| format!("flushing {}", tmp.display()))?;
    fs::rename(tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The directory `path` is in; `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A hidden, unique name next to `path`: same directory so the rename cannot cross file systems.
fn temp_path(path: &Path) -> anyhow::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let Some(name) = path.file_name() else {
        bail!("output path {} does not name a file", path.display());
    };
    let unique =
        format!(".{}.{}-{}.tmp", name.to_string_lossy(), std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    Ok(parent_dir(path).join(unique))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;
    use prost::Message as _;

    use super::*;
    use crate::output::folded::tests::sample_profile;
    use crate::test_support::TempDir;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn format_follows_the_extension() {
        let cases = [
            ("flame.svg", OutputFormat::FlameGraphSvg),
            ("out/FLAME.SVG", OutputFormat::FlameGraphSvg),
            ("cpu.pb.gz", OutputFormat::Pprof),
            ("cpu.pprof", OutputFormat::Pprof),
            ("cpu.pb", OutputFormat::Pprof),
            ("stacks.folded", OutputFormat::Folded),
            ("/tmp/stacks.txt", OutputFormat::Folded),
        ];
        for (path, format) in cases {
            assert_eq!(OutputFormat::from_path(Path::new(path)).expect(path), format, "{path}");
        }
    }

    #[test]
    fn unknown_extension_names_the_path_and_the_choices() {
        for path in ["profile.json", "profile", ".svg", "dir/"] {
            let err = format!("{:#}", OutputFormat::from_path(Path::new(path)).unwrap_err());
            assert!(!err.contains('\n'), "one line: {err}");
            assert!(err.contains(".svg") && err.contains(".pb.gz") && err.contains(".folded"), "{err}");
        }
        let err = format!("{:#}", OutputFormat::from_path(Path::new("profile.json")).unwrap_err());
        assert!(err.contains("profile.json"), "{err}");
    }

    #[test]
    fn writes_each_format_and_leaves_no_temp_file() {
        let dir = TempDir::new("output", "write");
        let profile = sample_profile();
        for name in ["flame.svg", "cpu.pb.gz", "stacks.folded"] {
            let path = dir.0.join(name);
            let format = OutputFormat::from_path(&path).expect("format");
            write_profile(&profile, &path, format, "title").expect("write");
            // A second write replaces the first.
            write_profile(&profile, &path, format, "title").expect("rewrite");
        }
        assert_eq!(entries(&dir.0), ["cpu.pb.gz", "flame.svg", "stacks.folded"]);

        let svg = fs::read_to_string(dir.0.join("flame.svg")).expect("svg");
        assert!(svg.contains("handler (app.py)"));
        assert_eq!(fs::read_to_string(dir.0.join("stacks.folded")).expect("folded"), folded::render(&profile));
        let mut raw = Vec::new();
        GzDecoder::new(fs::File::open(dir.0.join("cpu.pb.gz")).expect("open")).read_to_end(&mut raw).expect("gunzip");
        let decoded = pprof::proto::Profile::decode(&raw[..]).expect("decode");
        assert_eq!(decoded.sample.len(), profile.stacks.len());
    }

    #[test]
    fn write_errors_name_the_path() {
        let dir = TempDir::new("output", "missing");
        let path = dir.0.join("no-such-dir").join("flame.svg");
        let err =
            format!("{:#}", write_profile(&sample_profile(), &path, OutputFormat::FlameGraphSvg, "t").unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        // A failed render (no samples) is reported the same way and leaves nothing behind.
        let path = dir.0.join("empty.svg");
        let err =
            format!("{:#}", write_profile(&Profile::default(), &path, OutputFormat::FlameGraphSvg, "t").unwrap_err());
        assert!(err.contains("empty.svg") && err.contains("no samples"), "{err}");
        assert!(entries(&dir.0).is_empty());
    }

    #[test]
    fn check_writable_probes_the_directory() {
        let dir = TempDir::new("output", "check");
        check_writable(&dir.0.join("flame.svg")).expect("writable");
        assert!(entries(&dir.0).is_empty(), "the probe file is removed");

        let missing = dir.0.join("nope");
        let err = format!("{:#}", check_writable(&missing.join("flame.svg")).unwrap_err());
        assert!(err.contains(&missing.display().to_string()), "{err}");

        let err = format!("{:#}", check_writable(&dir.0).unwrap_err());
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn bare_file_names_live_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("flame.svg")), Path::new("."));
        assert_eq!(parent_dir(Path::new("out/flame.svg")), Path::new("out"));
        let tmp = temp_path(Path::new("flame.svg")).expect("temp path");
        assert_eq!(tmp.parent(), Some(Path::new(".")));
        assert!(tmp.file_name().expect("name").to_string_lossy().starts_with(".flame.svg."));
    }
}
