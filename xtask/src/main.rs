//! The project's developer tasks: `cargo xtask setup | build | run | test | dist | fuzz | demo | bench | kernels`.
//!
//! Building the profiler needs more than cargo: the kernel programs compile with nightly's rust-src, link with a
//! bpf-linker built against LLVM 22, and the tests need root and a built release binary. A Rust program that
//! every entry point goes through (a newcomer's first `cargo xtask demo`, CI's `cargo xtask test`) installs all
//! of that the same idempotent way and needs nothing but cargo to start, where a Makefile or shell scripts would
//! need their own tools and would drift apart.
mod bench;
mod cmd;
mod demo;
mod dist;
mod fuzz;
mod kernels;
mod python_matrix;
mod readme;
mod setup;
mod soak;

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Developer tasks of the profiler")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (Debian packages, nightly rust-src, bpf-linker, tracefs mount,
    /// the Python virtualenv of examples/quake-monitor); quick when it is all there.
    Setup,
    /// Set up, then build the `profiler` binary with its embedded eBPF object.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build and run `profiler` with the given arguments, as root (through sudo when not root).
    ///
    /// Builds in release mode unless --debug: unwinding and symbolizing in a debug build are slow enough to
    /// distort what a session measures, and the tests use the release binary too, so no second build.
    ///
    /// Example: cargo xtask run -- record --name myapp --duration 10s -o flame.svg
    Run {
        /// Build and run the release binary (the default).
        #[arg(long, conflicts_with = "debug")]
        release: bool,
        /// Build and run the debug binary.
        #[arg(long)]
        debug: bool,
        /// Arguments for `profiler`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, build the release binary, check the parsers' arithmetic lint, run the whole test suite (needs
    /// root), replay the committed fuzz corpus and every past finding with overflow checks on, then boot each
    /// kernel of the matrix under qemu for the smoke run of `kernels --smoke`. No stage is random: it passes or
    /// fails the same way every time. Arguments after `--` go to `cargo test` (and skip the lint, the replay and
    /// the kernels: a filtered run is a quick one).
    Test {
        /// Also build what `dist` builds and run the packaging tests that install and run it (ignored otherwise:
        /// a second, static build of everything takes minutes).
        #[arg(long)]
        dist: bool,
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Set up, then build what a release ships into target/dist/: the static (musl) binary, stripped, with its debug
    /// info split off (profiler.debug, and .build-id/); the Debian package (cargo-deb, checked by lintian) and its
    /// -dbgsym package; the OCI image of the Kubernetes DaemonSet (umoci), as a layout and a tar archive.
    Dist,
    /// Exploratory fuzzing: run each fuzz target in fuzz/ (parsers of /proc maps, ELF, Python line tables and
    /// code objects, pprof encoding) for a bounded time, starting from the committed corpus. A finding is left
    /// in fuzz/artifacts/TARGET/; once fixed it belongs in fuzz/regressions/TARGET/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Only these targets (repeat the flag); all of them by default.
        #[arg(long = "target", value_name = "TARGET")]
        targets: Vec<String>,
        /// Afterwards, add to fuzz/corpus/TARGET/ the inputs of this run that reach code the committed corpus
        /// does not (libFuzzer's merge), for `cargo xtask test` to replay from then on.
        #[arg(long)]
        merge: bool,
    },
    /// Profile the bundled FastAPI app (examples/quake-monitor) under load and write a flame graph, a pprof
    /// profile and folded stacks to target/demo/.
    Demo {
        /// How long to profile (15s, 2m, ...).
        #[arg(long, default_value = "15s")]
        duration: String,
        /// Profile examples/native-burn instead: a C program whose profile is known by construction.
        #[arg(long)]
        native: bool,
    },
    /// Boot the distributions' kernels of the matrix (Ubuntu 22.04 and 24.04, Debian 12 and 13) under qemu and run
    /// record, crash capture and a push in each; rewrites the README's tested kernels when all pass.
    Kernels {
        /// Only these kernels (ubuntu-22.04, debian-12, ubuntu-24.04, debian-13); all when none is given.
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// The short run: a few seconds of recording per kernel.
        #[arg(long)]
        smoke: bool,
        /// Test this profiler binary instead of building the release one.
        #[arg(long)]
        profiler: Option<PathBuf>,
    },
    /// Measure the profiler beside py-spy and perf (target slowdown, agent CPU and memory, sampling rate, cost per
    /// pipeline stage, fidelity) and write the table to bench/RESULTS.md; needs root, takes about 8 minutes.
    Bench {
        /// Rounds of each interleaved comparison; the tables give medians over them.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Run the integration suite's soak (`profiler run` against the demo app, restarted every two minutes, and a
    /// receiver that flaps) for longer, and write its memory and CPU per cycle into bench/RESULTS.md; needs root.
    Soak {
        /// How long, in minutes (whole two-minute cycles, at least three).
        #[arg(long, default_value_t = 60)]
        minutes: u32,
    },
}

/// Where things are: found from this crate's location, so xtask works from any current directory.
pub struct Workspace {
    pub root: PathBuf,
    /// cargo's target directory: CARGO_TARGET_DIR when set (relative to the current directory, as cargo reads
    /// it), else `target/` in the workspace root.
    pub target_dir: PathBuf,
    /// The cargo that runs xtask, so nested builds use the same toolchain.
    cargo: OsString,
}

impl Workspace {
    fn locate() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask's manifest directory has no parent")?
            .to_path_buf();
        let target_dir = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => env::current_dir().context("reading the current directory")?.join(dir),
            None => root.join("target"),
        };
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Ok(Self { root, target_dir, cargo })
    }

    fn cargo(&self) -> Command {
        let mut cargo = Command::new(&self.cargo);
        cargo.current_dir(&self.root);
        cargo
    }

    /// Builds the `profiler` binary (and, through its build.rs, the eBPF object it embeds); returns its path.
    pub fn build_profiler(&self, release: bool) -> Result<PathBuf> {
        let mut build = self.cargo();
        build.args(["build", "--package", "profiler-user"]);
        if release {
            build.arg("--release");
        }
        cmd::run(&mut build)?;
        Ok(self.target_dir.join(if release { "release" } else { "debug" }).join("profiler"))
    }
}

/// Runs clippy over the profiler's library. The modules that parse what a target controls (ELF files, maps
/// lines, Python code objects and line tables, CFA expressions, BTF) deny `clippy::arithmetic_side_effects`:
/// every operation there on such a value is checked, saturating or wrapping by choice, so an overflow is
/// neither a panic (debug) nor a silent wrap into a wrong range (release). Only denied lints fail this step.
fn lint_parsers(ws: &Workspace) -> Result<()> {
    let mut clippy = ws.cargo();
    // --release: shares the build script's output (the eBPF object) with the release build just made.
    clippy.args(["clippy", "--release", "--package", "profiler-user", "--lib", "--quiet"]);
    cmd::run(&mut clippy).context("a parser does unchecked arithmetic on what a target controls")
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    let ws = Workspace::locate()?;
    match cli.task {
        Task::Setup => setup::setup(&ws)?,
        Task::Build { release } => {
            setup::setup(&ws)?;
            ws.build_profiler(release)?;
        }
        Task::Run { release: _, debug, args } => {
            setup::setup(&ws)?;
            let profiler = ws.build_profiler(!debug)?;
            // exec: the profiler's exit status is ours, and Ctrl-C reaches it alone.
            return Err(cmd::exec(cmd::as_root(&profiler)?.args(args)));
        }
        Task::Test { dist: with_dist, args } => {
            setup::setup(&ws)?;
            if !cmd::is_root() {
                eprintln!("warning: not root: the tests that load eBPF programs will fail");
            }
            let profiler = ws.build_profiler(true)?;
            let filtered = !args.is_empty();
            if !filtered {
                lint_parsers(&ws)?;
            }
            // What a release ships, for the packaging tests (tests/integration/packaging.rs) to install and run.
            let dist_dir = if with_dist {
                setup::dist_tools()?;
                dist::dist(&ws)?
            } else {
                dist::dir(&ws)
            };
            // profiler-ebpf is a no_std program for the BPF target, which profiler-user's build.rs builds.
            let mut test = ws.cargo();
            test.args(["test", "--release", "--workspace", "--exclude", "profiler-ebpf"]).args(args);
            // QUAKE_VENV: the tests find the demo app's interpreter where setup put it, whatever the target dir.
            test.env("PROFILER_BIN", &profiler).env("QUAKE_VENV", setup::quake_venv_dir(&ws));
            // VALIDATE_VENV: where setup put the offline validators of deploy/.
            test.env("VALIDATE_VENV", setup::validate_venv_dir(&ws));
            // FLASK_VENV: the Flask app of the endpoint-label tests.
            test.env("FLASK_VENV", setup::flask_venv_dir(&ws));
            // The Python tests say what they ran, for the README's version matrix (rewritten when every check ran).
            let matrix = python_matrix::matrix_file(&ws);
            match std::fs::remove_file(&matrix) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(err).with_context(|| format!("removing {}", matrix.display()));
                }
                _ => {}
            }
            test.env(python_matrix::MATRIX_VAR, &matrix);
            test.env("PROFILER_DIST", &dist_dir);
            // A CI log keeps the head and the tail of the output: a failing test's tail must be its message, not a
            // backtrace through the test harness.
            test.env("RUST_BACKTRACE", "0");
            cmd::run(&mut test)?;
            python_matrix::update_readme(&ws, &matrix)?;
            if with_dist {
                let mut packaging = ws.cargo();
                packaging.args(["test", "--release", "--package", "profiler-tests", "--test", "integration"]);
                packaging.args(["packaging::", "--", "--ignored"]);
                packaging.env("PROFILER_BIN", &profiler).env("PROFILER_DIST", &dist_dir);
                cmd::run(&mut packaging)?;
            }
            if !filtered {
                fuzz::replay(&ws)?;
                // Last, as the longest stage (about 14 minutes under emulation): the verifier, BTF and sysctl
                // defaults of each kernel of the matrix, which this machine's kernel cannot show.
                kernels::run(&ws, &profiler, kernels::Mode::Smoke, &[])?;
            }
        }
        Task::Dist => {
            setup::setup(&ws)?;
            setup::dist_tools()?;
            dist::dist(&ws)?;
        }
        Task::Fuzz { seconds, targets, merge } => {
            setup::setup(&ws)?;
            setup::cargo_fuzz()?;
            fuzz::fuzz(&ws, &fuzz::Options { seconds_each: seconds, targets, merge })?;
        }
        Task::Demo { duration, native } => {
            setup::setup(&ws)?;
            let workload = if native { demo::Workload::NativeBurn } else { demo::Workload::QuakeMonitor };
            demo::demo(&ws, &duration, workload)?;
        }
        Task::Kernels { kernels: names, smoke, profiler } => {
            setup::setup(&ws)?;
            let profiler = match profiler {
                Some(profiler) => profiler,
                None => ws.build_profiler(true)?,
            };
            let mode = if smoke { kernels::Mode::Smoke } else { kernels::Mode::Full };
            kernels::run(&ws, &profiler, mode, &names)?;
        }
        Task::Bench { rounds } => {
            setup::setup(&ws)?;
            bench::bench(&ws, &bench::Options { rounds })?;
        }
        Task::Soak { minutes } => {
            setup::setup(&ws)?;
            let profiler = ws.build_profiler(true)?;
            soak::soak(&ws, &profiler, minutes)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
