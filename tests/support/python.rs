//! Python interpreters for the Python tests, made ready once and cached outside the repository, and readers for
//! what the profiler wrote about Python processes.
//!
//! The interpreters the tests cover:
//! - Debian's `/usr/bin/python3` (3.11, libpython linked in statically, non-PIE), with Debian's lxml and numpy;
//! - the other `python3` on PATH (here pyenv's 3.11: shared libpython, PIE), with lxml and numpy from PyPI in a
//!   virtualenv under [`CACHE_DIR`];
//! - CPython 3.8, 3.9, 3.10, 3.12, 3.13, 3.14 and 3.15 inside Ubuntu focal, Debian bullseye, Ubuntu jammy and
//!   noble, Debian trixie and sid (3.14 and 3.15 both) roots made with debootstrap under [`ROOTS_DIR`], run with
//!   `chroot` (a fair stand-in for a container: the profiler must resolve their files through /proc/PID/root), with
//!   their distribution's lxml and numpy;
//! - free-threaded CPython 3.13 and 3.14 (`python3.13t`, `python3.14t`: `--disable-gil`, no GIL), built from the
//!   source packages of Debian trixie and Ubuntu 26.04 into [`ROOTS_DIR`]`/python3.13t` and `…/python3.14t` (see
//!   [`free_threaded_python`]), with lxml and numpy from PyPI in a virtualenv;
//! - Python 2.7 in the focal root: a version the profiler does not support.
//!
//! `PROFILER_TEST_PYTHONS=debian,sid-python3.15,python3.13t` (a comma-separated list of `debian`, `path`,
//! `SUITE-PYTHON`, `python3.13t` and `python3.14t`) restricts [`python_interpreters`] to those, to run one interpreter's tests
//! alone; unset, every one runs.
//!
//! Making a root takes minutes and a virtualenv tens of seconds, so both are cached across runs: each is built under
//! a lock file (two test binaries may race) into a temporary name and renamed (or stamped) when complete, so a
//! half-made one is never used. A root made before its package list grew gets only the missing packages.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::io::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    thread,
};

use profiler::pprof::proto;

use crate::{run_to_success, scratch_root, workspace_root};

/// Where the Debian roots are cached: `ROOTS_DIR/<suite>`.
pub const ROOTS_DIR: &str = "/var/cache/profiler-roots";
/// Where other test environments (virtualenvs, the speedscope release of speedscope.rs) are cached.
pub const CACHE_DIR: &str = "/var/cache/profiler-tests";

/// A distribution debootstrap can make roots of.
#[derive(Clone, Copy, Debug)]
pub enum Distribution {
    Debian,
    Ubuntu,
}

impl Distribution {
    fn name(self) -> &'static str {
        match self {
            Distribution::Debian => "Debian",
            Distribution::Ubuntu => "Ubuntu",
        }
    }

    fn mirror(self) -> &'static str {
        match self {
            Distribution::Debian => "http://deb.debian.org/debian",
            Distribution::Ubuntu => "http://archive.ubuntu.com/ubuntu",
        }
    }
}

/// Ubuntu's archive keyring, which Debian does not ship: taken from Ubuntu's `ubuntu-keyring` package and checked
/// against this digest (of `ubuntu-archive-keyring.gpg` in version 2021.03.26, whose 2018 key F6ECB376 2474EDA9
/// D21B7022 871920D1 991BC93C signs focal and jammy), so debootstrap verifies the suites with a key this
/// repository vouches for.
const UBUNTU_KEYRING_DEB: &str = "pool/main/u/ubuntu-keyring/ubuntu-keyring_2021.03.26_all.deb";
const UBUNTU_KEYRING_SHA256: &str = "1a4dd63e5c76728960a2edddae22e2e0fc53df8e8b87806deb971030ac704eb0";

/// Environment for every Python workload: numerical libraries must compute in the calling thread (a BLAS thread
/// pool would move the time the tests measure to other threads), and no bytecode caches are written.
const WORKLOAD_ENV: [(&str, &str); 5] = [
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("PYTHONUNBUFFERED", "1"),
];

/// How to start an interpreter.
#[derive(Clone, Debug)]
enum Launch {
    /// A Python of this machine.
    Host { python: PathBuf },
    /// `chroot ROOT PYTHON`: files it sees at `/x` are at `ROOT/x` here.
    Chroot { root: PathBuf, python: String },
}

/// One CPython the tests run workloads under.
#[derive(Clone, Debug)]
pub struct Interpreter {
    /// Short and unique, for messages and file names: `debian-3.11`, `path-3.11`, `trixie-3.13`, `sid-3.15`.
    pub name: String,
    /// (major, minor), as the interpreter reports it.
    pub version: (u32, u32),
    /// A free-threaded build (`Py_GIL_DISABLED`): no GIL, so no `gil` label, GIL holder or GIL wait.
    pub free_threaded: bool,
    /// Where it comes from, for the README's version matrix: `Ubuntu 20.04.6 LTS root, python3`.
    pub origin: String,
    launch: Launch,
}

impl Interpreter {
    /// Copies the Python workloads (tests/workloads/python/*.py) where this interpreter can read them, next to a
    /// place for the files they write.
    pub fn stage(&self, label: &str) -> Stage {
        let leaf = format!("{label}-{}", self.name);
        let (host, inside) = match &self.launch {
            Launch::Host { .. } => {
                let dir = scratch_root().join(&leaf);
                (dir.clone(), dir)
            }
            Launch::Chroot { root, .. } => {
                let inside = PathBuf::from(format!("/tmp/profiler-tests.{}", std::process::id())).join(&leaf);
                (root.join(inside.strip_prefix("/").expect("absolute")), inside)
            }
        };
        let _ = fs::remove_dir_all(&host);
        fs::create_dir_all(&host).unwrap_or_else(|err| panic!("creating {}: {err}", host.display()));
        let sources = workspace_root().join("tests/workloads/python");
        for entry in fs::read_dir(&sources).unwrap_or_else(|err| panic!("reading {}: {err}", sources.display())) {
            let path = entry.expect("listing the Python workloads").path();
            if path.extension().is_some_and(|ext| ext == "py") {
                let to = host.join(path.file_name().expect("a file name"));
                fs::copy(&path, &to)
                    .unwrap_or_else(|err| panic!("copying {} to {}: {err}", path.display(), to.display()));
            }
        }
        Stage { host, inside, in_root: matches!(self.launch, Launch::Chroot { .. }) }
    }

    /// A command running `script` (a path as the interpreter sees it) with `args`.
    pub fn command(&self, script: &Path, args: &[&str]) -> Command {
        let mut cmd = self.python();
        cmd.arg(script).args(args);
        cmd
    }

    /// The interpreter, with the workloads' environment.
    fn python(&self) -> Command {
        let mut cmd = match &self.launch {
            Launch::Host { python } => Command::new(python),
            Launch::Chroot { root, python } => {
                let mut cmd = Command::new("chroot");
                cmd.arg(root).arg(python);
                cmd
            }
        };
        cmd.envs(WORKLOAD_ENV);
        if self.free_threaded {
            // An extension module that does not declare itself free-threading-safe (lxml built from source) would
            // turn the GIL back on as it is imported: the tests want the build as its users run it, without one.
            cmd.env("PYTHON_GIL", "0");
        }
        cmd
    }

    /// Runs a short snippet (`python -c CODE`) to its end: the command, for messages, and what it left.
    fn run_snippet(&self, code: &str) -> (Command, std::process::Output) {
        let mut cmd = self.python();
        cmd.args(["-c", code]);
        let output = cmd.output().unwrap_or_else(|err| panic!("could not start {cmd:?}: {err}"));
        (cmd, output)
    }

    /// Runs a short snippet to its end and returns its stdout; panics, showing stderr, when it fails.
    fn eval(&self, code: &str) -> String {
        let (cmd, output) = self.run_snippet(code);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{cmd:?} failed ({}):\n{stderr}", output.status);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn with_version(name_prefix: &str, origin: String, launch: Launch) -> Interpreter {
        let mut interpreter =
            Interpreter { name: String::new(), version: (0, 0), free_threaded: false, origin, launch };
        // Python 2 and 3 alike (2.7 has sysconfig too).
        let version = interpreter.eval(
            "import sys, sysconfig; sys.stdout.write('%d %d %d' % (sys.version_info[:2] + \
             (sysconfig.get_config_var('Py_GIL_DISABLED') or 0,)))",
        );
        let mut numbers = version.split_whitespace().map(|n| n.parse::<u32>().expect("a version number"));
        interpreter.version = (numbers.next().expect("major"), numbers.next().expect("minor"));
        interpreter.free_threaded = numbers.next() == Some(1);
        let t = if interpreter.free_threaded { "t" } else { "" };
        interpreter.name = format!("{name_prefix}-{}.{}{t}", interpreter.version.0, interpreter.version.1);
        interpreter
    }

    /// `PYTHON LXML NUMPY`: the interpreter's full version (`3.11.2`) and those of its lxml and numpy.
    pub fn versions(&self) -> String {
        self.eval(
            "import platform, lxml.etree, numpy; print(platform.python_version(), \
             '.'.join(map(str, lxml.etree.LXML_VERSION[:3])), numpy.__version__)",
        )
    }

    /// Panics unless lxml and numpy import, with what to do about it.
    fn require_lxml_and_numpy(&self, remedy: &str) {
        let (_, output) = self.run_snippet("import lxml.etree, numpy");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{}: lxml and numpy do not import ({remedy}):\n{stderr}", self.name);
    }
}

/// The workloads copied where an interpreter can read them. A copy inside a Debian root is removed afterwards
/// unless the test failed.
pub struct Stage {
    host: PathBuf,
    inside: PathBuf,
    in_root: bool,
}

impl Stage {
    /// `name` as this machine sees it.
    pub fn host(&self, name: &str) -> PathBuf {
        self.host.join(name)
    }

    /// `name` as the interpreter sees it (and so as the profiler reports its Python files).
    pub fn inside(&self, name: &str) -> PathBuf {
        self.inside.join(name)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("keeping the workload's files: {}", self.host.display());
        } else if self.in_root {
            let _ = fs::remove_dir_all(&self.host);
            // The per-run parent, when this was its last test.
            if let Some(parent) = self.host.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The interpreters

/// Debian's `/usr/bin/python3` with Debian's lxml and numpy.
pub fn debian_python() -> &'static Interpreter {
    static PYTHON: OnceLock<Interpreter> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = PathBuf::from("/usr/bin/python3");
        assert!(python.is_file(), "no {}: this machine is not the Debian the tests expect", python.display());
        let origin = format!("{}, {}", os_name(Path::new("/")), python.display());
        let interpreter = Interpreter::with_version("debian", origin, Launch::Host { python });
        interpreter.require_lxml_and_numpy(
            "install Debian's python3-lxml and python3-numpy: `cargo xtask setup`, or \
             `apt-get install python3-lxml python3-numpy`",
        );
        interpreter
    })
}

/// The first `python3` on PATH that is not Debian's `/usr/bin/python3` (pyenv's shims resolved by asking the
/// interpreter for `sys.executable`), run from a virtualenv with lxml and numpy from PyPI. `None` (after saying
/// so) when there is none, except under `CI=true`, where that fails the test.
pub fn path_python() -> Option<&'static Interpreter> {
    static PYTHON: OnceLock<Option<Interpreter>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let Some(python) = other_python_on_path() else {
                let why = "no python3 on PATH other than Debian's /usr/bin/python3";
                assert!(!ci(), "{why}, and CI=true does not allow skipping it: put the second Python 3.11 on PATH");
                eprintln!("skipping the second Python on PATH: {why}");
                return None;
            };
            let origin = format!("{} (on PATH)", python.display());
            let base = Interpreter::with_version("path", origin, Launch::Host { python: python.clone() });
            let (major, minor) = base.version;
            let venv = ensure_venv(&python, &format!("venv-path-{major}.{minor}"), &LXML_AND_NUMPY);
            let interpreter = Interpreter { launch: Launch::Host { python: venv.join("bin/python") }, ..base };
            interpreter.require_lxml_and_numpy(&format!("remove {} to have it made again", venv.display()));
            Some(interpreter)
        })
        .as_ref()
}

/// The distribution and release of the system at `root`, from its os-release (`PRETTY_NAME`); `root` when it has
/// none.
fn os_name(root: &Path) -> String {
    let text =
        ["etc/os-release", "usr/lib/os-release"].iter().find_map(|file| fs::read_to_string(root.join(file)).ok());
    text.as_deref()
        .and_then(|text| text.lines().find_map(|line| line.strip_prefix("PRETTY_NAME=")))
        .map(|name| name.trim_matches('"').to_owned())
        .unwrap_or_else(|| root.display().to_string())
}

/// The distribution roots the Python tests run interpreters in: (distribution, suite, the packages to install).
const ROOTS: [(Distribution, &str, &[&str]); 6] = [
    // CPython 3.8, and Python 2.7 (see [`python_2_7`]).
    (Distribution::Ubuntu, "focal", &["python3", "python3-lxml", "python3-numpy", "python2.7-minimal"]),
    // CPython 3.9.
    (Distribution::Debian, "bullseye", &["python3", "python3-lxml", "python3-numpy"]),
    // CPython 3.10.
    (Distribution::Ubuntu, "jammy", &["python3", "python3-lxml", "python3-numpy"]),
    // CPython 3.12.
    (Distribution::Ubuntu, "noble", &["python3", "python3-lxml", "python3-numpy"]),
    // CPython 3.13.
    (Distribution::Debian, "trixie", &["python3", "python3-lxml", "python3-numpy"]),
    // CPython 3.14 and 3.15: Debian's python3-lxml and python3-numpy carry extension modules for both.
    (Distribution::Debian, "sid", &["python3", "python3.14", "python3.15", "python3-lxml", "python3-numpy"]),
];

/// The CPythons in those roots that the Python tests cover, in the tests' order: (suite, the interpreter to run).
const CHROOT_PYTHONS: [(&str, &str); 7] = [
    ("focal", "python3"),
    ("bullseye", "python3"),
    ("jammy", "python3"),
    ("noble", "python3"),
    ("trixie", "python3"),
    ("sid", "python3.14"),
    ("sid", "python3.15"),
];

/// The root of `suite` (one of [`ROOTS`]), made if it is not there yet.
pub fn root(suite: &str) -> PathBuf {
    let (distribution, _, packages) =
        ROOTS.iter().find(|(_, s, _)| *s == suite).copied().unwrap_or_else(|| panic!("no Python root {suite}"));
    ensure_root(distribution, suite, packages)
}

/// The CPython `python` (e.g. `python3.15`) of the root of `suite`, one of [`CHROOT_PYTHONS`], run with `chroot`,
/// with its distribution's lxml and numpy.
pub fn chroot_python(suite: &str, python: &str) -> &'static Interpreter {
    static PYTHONS: [OnceLock<Interpreter>; CHROOT_PYTHONS.len()] = [const { OnceLock::new() }; CHROOT_PYTHONS.len()];
    let at = CHROOT_PYTHONS
        .iter()
        .position(|&(s, p)| s == suite && p == python)
        .unwrap_or_else(|| panic!("no {python} in the Python root {suite}"));
    PYTHONS[at].get_or_init(|| {
        let root = root(suite);
        let origin = format!("{} root, {python}", os_name(&root));
        let launch = Launch::Chroot { root: root.clone(), python: python.into() };
        let interpreter = Interpreter::with_version(suite, origin, launch);
        interpreter.require_lxml_and_numpy(&format!("remove {} to have it made again", root.display()));
        interpreter
    })
}

/// Python 2.7 in the focal root: a Python the profiler does not support.
pub fn python_2_7() -> &'static Interpreter {
    static PYTHON: OnceLock<Interpreter> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = root("focal");
        let origin = format!("{} root, python2.7", os_name(&root));
        Interpreter::with_version("focal", origin, Launch::Chroot { root, python: "python2.7".into() })
    })
}

/// Every interpreter with lxml and numpy that the Python tests cover, in a fixed order (those named by
/// `PROFILER_TEST_PYTHONS` when it is set; see the module's doc).
pub fn python_interpreters() -> Vec<&'static Interpreter> {
    let only = std::env::var("PROFILER_TEST_PYTHONS").ok();
    let wanted = |key: &str| only.as_deref().is_none_or(|only| only.split(',').any(|k| k.trim() == key));
    let mut all = Vec::new();
    if wanted("debian") {
        all.push(debian_python());
    }
    if wanted("path") {
        all.extend(path_python());
    }
    for &(suite, python) in &CHROOT_PYTHONS {
        if wanted(&format!("{suite}-{python}")) {
            all.push(chroot_python(suite, python));
        }
    }
    for build in &FREE_THREADED {
        if wanted(build.python) {
            all.push(free_threaded_python(build.python));
        }
    }
    assert!(!all.is_empty(), "PROFILER_TEST_PYTHONS={only:?} names no interpreter the tests know");
    all
}

/// A free-threaded CPython the tests build from a distribution's source package (no distribution ships one).
struct FreeThreaded {
    /// The executable's name, and the key `PROFILER_TEST_PYTHONS` knows it by.
    python: &'static str,
    /// The source package.
    package: &'static str,
    distribution: Distribution,
    /// The suite whose source it is taken from.
    suite: &'static str,
    /// lxml and numpy for it, as pip requirements: the newest with a wheel for it where there is one (PyPI has
    /// no free-threaded lxml wheel for 3.13, so that one is built from source, once).
    requirements: [&'static str; 2],
}

/// The free-threaded CPythons the tests build. The mirrors keep the source of trixie's python3.13 and of Ubuntu
/// 26.04's python3.14; sid's python3.14 and python3.15 sources are listed but not on them, so there is no 3.15t.
const FREE_THREADED: [FreeThreaded; 2] = [
    // numpy 2.5 dropped 3.13t wheels.
    FreeThreaded {
        python: "python3.13t",
        package: "python3.13",
        distribution: Distribution::Debian,
        suite: "trixie",
        requirements: ["lxml", "numpy<2.5"],
    },
    FreeThreaded {
        python: "python3.14t",
        package: "python3.14",
        distribution: Distribution::Ubuntu,
        suite: "resolute",
        requirements: LXML_AND_NUMPY,
    },
];

/// The free-threaded CPython `python` (one of [`FREE_THREADED`]) built by [`ensure_free_threaded`], run from a
/// virtualenv with lxml and numpy from PyPI (lxml built from source where PyPI has no free-threaded wheel of it).
pub fn free_threaded_python(python: &str) -> &'static Interpreter {
    static PYTHONS: [OnceLock<Interpreter>; FREE_THREADED.len()] = [const { OnceLock::new() }; FREE_THREADED.len()];
    let at = FREE_THREADED
        .iter()
        .position(|build| build.python == python)
        .unwrap_or_else(|| panic!("no free-threaded Python {python}"));
    PYTHONS[at].get_or_init(|| {
        let build = &FREE_THREADED[at];
        let prefix = ensure_free_threaded(build);
        let built = prefix.join("bin").join(python);
        let origin = format!(
            "built from {} {}'s {} source with --disable-gil",
            build.distribution.name(),
            build.suite,
            build.package
        );
        let base = Interpreter::with_version("freethreaded", origin, Launch::Host { python: built.clone() });
        assert!(
            base.free_threaded,
            "{} is not a free-threaded build: remove {} to have it made again",
            built.display(),
            prefix.display()
        );
        let venv = ensure_venv(&built, &format!("venv-{python}"), &build.requirements);
        let interpreter = Interpreter { launch: Launch::Host { python: venv.join("bin/python") }, ..base };
        interpreter.require_lxml_and_numpy(&format!("remove {} to have it made again", venv.display()));
        interpreter
    })
}

/// Debian packages the free-threaded build needs on this machine: a compiler, the headers of the modules the tests
/// use (ctypes: libffi; zlib; ssl, for pip) and of lxml's libraries (lxml 3.13t is built from source), and what
/// fetches and unpacks the tarball.
const FREE_THREADED_BUILD_DEPENDS: [&str; 9] = [
    "build-essential",
    "pkg-config",
    "libffi-dev",
    "zlib1g-dev",
    "libssl-dev",
    "libxml2-dev",
    "libxslt1-dev",
    "xz-utils",
    "curl",
];

/// The CPython source package of `build` (e.g. Debian trixie's `python3.13`), configured with `--disable-gil` and
/// installed into `ROOTS_DIR/python` (e.g. `python3.13t`), made once: `python.ready`, written last, records the
/// tarball and the configure line, and a prefix without it is made again. The source package's upstream tarball
/// (`.orig.tar.xz`: CPython as released) is located with `apt-get source --print-uris` and a private list
/// directory (`deb-src` of the roots' mirror, Ubuntu's checked with the keyring the roots use; the host's apt
/// configuration is left alone), fetched, and checked against the digest in the signed index; the distribution's
/// own patches serve its packaging and are not applied. No optimization passes (no PGO or LTO) and no test modules:
/// about 5 minutes of CPU. Any failure panics naming the step and showing the end of its log.
fn ensure_free_threaded(build: &FreeThreaded) -> PathBuf {
    let FreeThreaded { python, package, distribution, suite, .. } = *build;
    let roots = Path::new(ROOTS_DIR);
    let prefix = roots.join(python);
    let stamp = roots.join(format!("{python}.ready"));
    let configure = format!("--disable-gil --prefix={} --disable-test-modules --with-lto=no", prefix.display());
    let ready = || {
        prefix.join("bin").join(python).is_file()
            && fs::read_to_string(&stamp).is_ok_and(|text| text.lines().nth(1) == Some(configure.as_str()))
    };
    if ready() {
        return prefix;
    }
    fs::create_dir_all(roots).unwrap_or_else(|err| panic!("creating {}: {err}", roots.display()));
    let _lock = FileLock::acquire(&roots.join(format!("{python}.lock")));
    if ready() {
        return prefix;
    }
    let work = roots.join(format!("{python}.build"));
    let log = roots.join(format!("{python}.log"));
    eprintln!(
        "building the free-threaded {python} from {} {suite}'s {package} source into {} (minutes; log in {})",
        distribution.name(),
        prefix.display(),
        log.display()
    );
    // Ours alone while we hold the lock: whatever is there is left from a run that was killed.
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_dir_all(&prefix);
    let _ = fs::remove_file(&stamp);
    let apt = work.join("apt");
    for dir in [apt.join("lists/partial"), apt.join("cache/archives/partial"), work.join("src")] {
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
    }
    fs::File::create(&log).unwrap_or_else(|err| panic!("creating {}: {err}", log.display()));
    let step = |what: &str, cmd: &mut Command| {
        let log_file = fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap_or_else(|err| panic!("opening {}: {err}", log.display()));
        cmd.stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().expect("cloning a file handle"))
            .stderr(log_file);
        let status = cmd.status().unwrap_or_else(|err| panic!("could not start {cmd:?}: {err}"));
        if !status.success() {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect();
            panic!(
                "building the free-threaded {python} failed at {what} ({status}): {cmd:?}; the end of {}:\n{}",
                log.display(),
                tail.join("\n")
            );
        }
    };
    let installed = |package: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Status}", package])
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
    };
    let missing: Vec<&str> = FREE_THREADED_BUILD_DEPENDS.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        step("apt-get update", Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"));
        step(
            "installing the build dependencies",
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        );
    }
    let sources = apt.join("sources.list");
    let signed_by = match distribution {
        Distribution::Debian => String::new(),
        Distribution::Ubuntu => format!("[signed-by={}] ", ubuntu_keyring().display()),
    };
    fs::write(&sources, format!("deb-src {signed_by}{} {suite} main\n", distribution.mirror()))
        .unwrap_or_else(|err| panic!("writing {}: {err}", sources.display()));
    let apt_get = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.arg("-q")
            .arg(format!("-oDir::Etc::SourceList={}", sources.display()))
            .arg("-oDir::Etc::SourceParts=/dev/null")
            .arg(format!("-oDir::State::Lists={}", apt.join("lists").display()))
            .arg(format!("-oDir::Cache={}", apt.join("cache").display()))
            .arg("-oDir::State::status=/dev/null")
            // As for the roots: signatures are checked, not Valid-Until (a mirror may lag).
            .arg("-oAcquire::Check-Valid-Until=false")
            .arg("-oAPT::Sandbox::User=root")
            .args(args)
            .current_dir(work.join("src"));
        cmd
    };
    step("apt-get update (deb-src)", &mut apt_get(&["update"]));
    // Only the upstream tarball (`.orig.tar.*`) is used, and the mirrors keep some source packages' tarballs
    // without their `.dsc`: it is fetched by itself and checked against the digest of the signed index.
    let uris = apt_get(&["source", "--only-source", "--print-uris", package])
        .output()
        .unwrap_or_else(|err| panic!("could not run apt-get source --print-uris: {err}"));
    let listing = String::from_utf8_lossy(&uris.stdout);
    let (url, file, digest) = listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [url, file, _size, digest] = fields[..] else { return None };
            file.contains(".orig.tar.").then(|| (url.trim_matches('\''), file, digest))
        })
        .next()
        .unwrap_or_else(|| panic!("apt-get source --print-uris {package} lists no .orig.tar: {listing}"));
    let tarball = work.join("src").join(file);
    step("downloading the source", Command::new("curl").args(["-fsSL", "-o"]).arg(&tarball).arg(url));
    let (algorithm, wanted) = digest.split_once(':').unwrap_or_else(|| panic!("a digest without its kind: {digest}"));
    let got = file_digest(&algorithm.to_ascii_lowercase(), &tarball);
    assert!(
        got == wanted,
        "{} does not have the {algorithm} digest the signed index gives ({wanted}): {got}",
        tarball.display()
    );
    step("unpacking the source", Command::new("tar").arg("-xf").arg(&tarball).arg("-C").arg(work.join("src")));
    let tree = fs::read_dir(work.join("src"))
        .unwrap_or_else(|err| panic!("listing {}: {err}", work.join("src").display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.join("configure").is_file())
        .unwrap_or_else(|| panic!("{} holds no source tree with a configure script", tarball.display()));
    step("configure", Command::new("./configure").args(configure.split(' ')).current_dir(&tree));
    let nice_make = |args: &[&str]| {
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "19", "make"]).args(args).current_dir(&tree);
        cmd
    };
    step("make", &mut nice_make(&["-j2"]));
    step("make install", &mut nice_make(&["install"]));
    fs::write(&stamp, format!("{file}\n{configure}\n"))
        .unwrap_or_else(|err| panic!("writing {}: {err}", stamp.display()));
    // The source tree and objects (half a gigabyte) are not needed again.
    let _ = fs::remove_dir_all(&work);
    prefix
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

fn other_python_on_path() -> Option<PathBuf> {
    let debian = fs::canonicalize("/usr/bin/python3").ok();
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("python3");
        if !candidate.is_file() {
            continue;
        }
        // A pyenv shim is a shell script: only the interpreter knows which executable it is.
        let Ok(output) = Command::new(&candidate).args(["-c", "import sys; print(sys.executable)"]).output() else {
            continue;
        };
        if !output.status.success() {
            continue;
        }
        let executable = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let Ok(real) = fs::canonicalize(&executable) else { continue };
        if Some(&real) != debian.as_ref() {
            return Some(executable);
        }
    }
    None
}

/// pip's requirements for lxml and numpy, newest by default.
const LXML_AND_NUMPY: [&str; 2] = ["lxml", "numpy"];

/// A virtualenv of `python` with `requirements` (lxml and numpy) from PyPI at `CACHE_DIR/name`, made once: its stamp
/// file, written last, names the interpreter it was made from and the requirements.
fn ensure_venv(python: &Path, name: &str, requirements: &[&str]) -> PathBuf {
    let cache = Path::new(CACHE_DIR);
    fs::create_dir_all(cache).unwrap_or_else(|err| panic!("creating {}: {err}", cache.display()));
    let venv = cache.join(name);
    let stamp = venv.join(".profiler-tests-ready");
    let wanted = format!("{}\n{}\n", python.display(), requirements.join(" "));
    if fs::read_to_string(&stamp).is_ok_and(|text| text == wanted) {
        return venv;
    }
    let _lock = FileLock::acquire(&cache.join(format!("{name}.lock")));
    if fs::read_to_string(&stamp).is_ok_and(|text| text == wanted) {
        return venv;
    }
    eprintln!("making the virtualenv {} ({} from PyPI)", venv.display(), requirements.join(", "));
    let _ = fs::remove_dir_all(&venv);
    run_to_success(Command::new(python).args(["-m", "venv"]).arg(&venv));
    run_to_success(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
            .args(requirements),
    );
    fs::write(&stamp, wanted).unwrap_or_else(|err| panic!("writing {}: {err}", stamp.display()));
    venv
}

/// The Debian `suite` root (see [`ensure_root`]).
pub fn ensure_debian_root(suite: &str, packages: &[&str]) -> PathBuf {
    ensure_root(Distribution::Debian, suite, packages)
}

/// The `suite` root at `ROOTS_DIR/suite` with `packages` (`suite.packages` records the list it has). Made with
/// `debootstrap --variant=minbase --include=PACKAGES` when missing into `suite.partial`, renamed when complete;
/// a root whose list lacks some of `packages` and has no others gets the missing ones with `apt-get` inside it
/// (see [`add_packages`]); one made with other packages is made again. Installs debootstrap first if needed.
pub fn ensure_root(distribution: Distribution, suite: &str, packages: &[&str]) -> PathBuf {
    ensure_root_named(distribution, suite, suite, packages)
}

/// As [`ensure_root`], for a second root of a suite: at `ROOTS_DIR/name` (with `name.packages`, `name.lock`,
/// `name.log`), e.g. the packaging tests' bookworm with systemd, which boots.
pub fn ensure_root_named(distribution: Distribution, suite: &str, name: &str, packages: &[&str]) -> PathBuf {
    let roots = Path::new(ROOTS_DIR);
    let root = roots.join(name);
    let stamp = roots.join(format!("{name}.packages"));
    let wanted = packages.join(",");
    let made = || root.join("usr/bin/python3").exists();
    let ready = || made() && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted);
    if ready() {
        return root;
    }
    fs::create_dir_all(roots).unwrap_or_else(|err| panic!("creating {}: {err}", roots.display()));
    let _lock = FileLock::acquire(&roots.join(format!("{name}.lock")));
    if ready() {
        return root;
    }
    let has: Option<Vec<String>> =
        fs::read_to_string(&stamp).ok().filter(|_| made()).map(|s| s.split(',').map(str::to_owned).collect());
    if let Some(has) = has.filter(|has| has.iter().all(|p| packages.contains(&p.as_str()))) {
        let missing: Vec<&str> = packages.iter().copied().filter(|p| !has.iter().any(|h| h == p)).collect();
        add_packages(&root, name, &missing);
        fs::write(&stamp, &wanted).unwrap_or_else(|err| panic!("writing {}: {err}", stamp.display()));
        return root;
    }
    if root.exists() {
        eprintln!("{} was made with other packages than {wanted}: making it again", root.display());
        let _ = Command::new("umount").arg(root.join("proc")).output();
        fs::remove_dir_all(&root).unwrap_or_else(|err| panic!("removing {}: {err}", root.display()));
    }
    if Command::new("debootstrap").arg("--version").output().is_err() {
        eprintln!("installing debootstrap");
        run_to_success(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "--no-install-recommends",
            "debootstrap",
        ]));
    }
    // Ours alone while we hold the lock: whatever is there is left from a run that was killed.
    let partial = roots.join(format!("{name}.partial"));
    let _ = fs::remove_dir_all(&partial);
    let log = roots.join(format!("{name}.log"));
    eprintln!("making the {distribution:?} {suite} root {} (takes minutes; log in {})", root.display(), log.display());
    let log_file = fs::File::create(&log).unwrap_or_else(|err| panic!("creating {}: {err}", log.display()));
    let mut debootstrap = Command::new("debootstrap");
    debootstrap.arg("--variant=minbase").arg(format!("--include={wanted}"));
    if let Distribution::Ubuntu = distribution {
        debootstrap.arg("--components=main,universe").arg(format!("--keyring={}", ubuntu_keyring().display()));
    }
    debootstrap.arg(suite).arg(&partial).arg(distribution.mirror());
    if let Distribution::Ubuntu = distribution {
        // Every Ubuntu suite since 7.10 is made the same way; naming the script lets an older debootstrap make
        // suites newer than itself (bookworm's knows no noble).
        debootstrap.arg("/usr/share/debootstrap/scripts/gutsy");
    }
    let status = debootstrap
        .stdout(log_file.try_clone().expect("cloning a file handle"))
        .stderr(log_file)
        .status()
        .unwrap_or_else(|err| panic!("could not start debootstrap: {err}"));
    if !status.success() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("debootstrap of {suite} failed ({status}); the end of {}:\n{}", log.display(), tail.join("\n"));
    }
    fs::rename(&partial, &root)
        .unwrap_or_else(|err| panic!("renaming {} to {}: {err}", partial.display(), root.display()));
    fs::write(&stamp, &wanted).unwrap_or_else(|err| panic!("writing {}: {err}", stamp.display()));
    root
}

/// Installs `packages` into the finished root at `root` (`chroot ROOT apt-get update`, then `apt-get install`), for
/// a root made before they joined its list: minutes less than making it again. The root's package lists are
/// refreshed first, since a moving suite such as sid drops the versions they named. Output is added to `suite.log`.
fn add_packages(root: &Path, suite: &str, packages: &[&str]) {
    if packages.is_empty() {
        return;
    }
    let log = Path::new(ROOTS_DIR).join(format!("{suite}.log"));
    eprintln!("installing {} into the {suite} root {} (log in {})", packages.join(" "), root.display(), log.display());
    let apt_get = |args: &[&str]| {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|err| panic!("opening {}: {err}", log.display()));
        let mut cmd = Command::new("chroot");
        cmd.arg(root)
            .arg("apt-get")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .stdout(log_file.try_clone().expect("cloning a file handle"))
            .stderr(log_file);
        let status = cmd.status().unwrap_or_else(|err| panic!("could not start {cmd:?}: {err}"));
        if !status.success() {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            panic!("{cmd:?} failed ({status}); the end of {}:\n{}", log.display(), tail.join("\n"));
        }
    };
    // Signatures are checked, not the Release file's Valid-Until, as debootstrap does when it makes the root: a
    // mirror that lags behind (or a snapshot of one) must not stop the tests.
    apt_get(&["-o", "Acquire::Check-Valid-Until=false", "update"]);
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt_get(&install);
}

/// The hex digest of `file` by coreutils' `ALGORITHMsum` (`sha256`, `sha512`, …); empty when it cannot be read.
pub(crate) fn file_digest(algorithm: &str, file: &Path) -> String {
    let tool = format!("{algorithm}sum");
    let output = Command::new(&tool).arg(file).output().unwrap_or_else(|err| panic!("running {tool}: {err}"));
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

/// Ubuntu's archive keyring under `ROOTS_DIR`, fetched from Ubuntu's mirror once and checked against
/// [`UBUNTU_KEYRING_SHA256`].
fn ubuntu_keyring() -> PathBuf {
    let dir = Path::new(ROOTS_DIR).join("ubuntu-keyring");
    let keyring = dir.join("usr/share/keyrings/ubuntu-archive-keyring.gpg");
    if !keyring.exists() {
        let deb = Path::new(ROOTS_DIR).join("ubuntu-keyring.deb");
        let url = format!("{}/{UBUNTU_KEYRING_DEB}", Distribution::Ubuntu.mirror());
        run_to_success(Command::new("curl").args(["-fsSL", "--retry", "3", "-o"]).arg(&deb).arg(&url));
        run_to_success(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir));
    }
    let digest = file_digest("sha256", &keyring);
    assert!(
        digest == UBUNTU_KEYRING_SHA256,
        "{} does not have the expected SHA-256 ({UBUNTU_KEYRING_SHA256}): {digest}; remove {} to fetch it again",
        keyring.display(),
        dir.display()
    );
    keyring
}

/// An exclusive `flock` on a file, held until dropped (and released by the kernel if the process dies).
pub(crate) struct FileLock(fs::File);

impl FileLock {
    pub(crate) fn acquire(path: &Path) -> FileLock {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|err| panic!("opening the lock file {}: {err}", path.display()));
        // SAFETY: flock on a descriptor we own; it has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "locking {}: {}", path.display(), std::io::Error::last_os_error());
        FileLock(file)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Reading pprof

/// One frame of a pprof sample, inlined frames expanded.
#[derive(Clone, Debug, PartialEq)]
pub struct PprofFrame {
    /// Empty when the profiler left the name to the server (no `Line` on the location).
    pub function: String,
    /// The function's file (a Python frame's source file).
    pub file: String,
    pub line: i64,
    /// The mapping's file name: a module's path, or `[python]` and the like for frames of no module.
    pub mapping: String,
}

impl PprofFrame {
    pub fn is_python(&self) -> bool {
        self.mapping == "[python]"
    }
}

/// A pprof sample in the shape the tests want: frames root first, labels as strings, a sample count.
#[derive(Clone, Debug)]
pub struct PprofSample {
    pub frames: Vec<PprofFrame>,
    pub labels: BTreeMap<String, String>,
    pub count: u64,
}

impl PprofSample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// The samples of a profile. Panics if its tables do not hold together.
pub fn pprof_samples(profile: &proto::Profile) -> Vec<PprofSample> {
    let s = |index: i64| -> String {
        profile.string_table.get(usize::try_from(index).expect("string index")).cloned().expect("string index in range")
    };
    let period = profile.period.max(1);
    let locations: HashMap<u64, &proto::Location> = profile.location.iter().map(|l| (l.id, l)).collect();
    let functions: HashMap<u64, &proto::Function> = profile.function.iter().map(|f| (f.id, f)).collect();
    let mappings: HashMap<u64, &proto::Mapping> = profile.mapping.iter().map(|m| (m.id, m)).collect();
    profile
        .sample
        .iter()
        .map(|sample| {
            let mut frames = Vec::new();
            // location_id is leaf first; within a location, line[0] is the innermost inlined frame.
            for &id in sample.location_id.iter().rev() {
                let location = locations.get(&id).unwrap_or_else(|| panic!("no location with id {id}"));
                let mapping = if location.mapping_id == 0 {
                    String::new()
                } else {
                    s(mappings.get(&location.mapping_id).expect("the location's mapping").filename)
                };
                if location.line.is_empty() {
                    frames.push(PprofFrame { function: String::new(), file: String::new(), line: 0, mapping });
                    continue;
                }
                for line in location.line.iter().rev() {
                    let function = functions.get(&line.function_id).expect("the line's function");
                    frames.push(PprofFrame {
                        function: s(function.name),
                        file: s(function.filename),
                        line: line.line,
                        mapping: mapping.clone(),
                    });
                }
            }
            let labels = sample
                .label
                .iter()
                .map(|label| {
                    let value = if label.str != 0 { s(label.str) } else { label.num.to_string() };
                    (s(label.key), value)
                })
                .collect();
            let value = sample.value.first().copied().unwrap_or(0);
            PprofSample { frames, labels, count: u64::try_from(value / period).expect("a non-negative value") }
        })
        .collect()
}

/// The 1-based number of the only line of `file` containing `marker`.
pub fn marked_line(file: &Path, marker: &str) -> i64 {
    let text = fs::read_to_string(file).unwrap_or_else(|err| panic!("reading {}: {err}", file.display()));
    let lines: Vec<usize> =
        text.lines().enumerate().filter(|(_, line)| line.contains(marker)).map(|(i, _)| i + 1).collect();
    assert_eq!(lines.len(), 1, "{} should have exactly one line marked {marker}", file.display());
    lines[0] as i64
}
