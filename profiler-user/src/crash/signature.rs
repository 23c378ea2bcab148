//! Crash signatures: one short id for "the same crash", so that a service that crashes a hundred times shows one
//! group with a count instead of a hundred reports to read.
//!
//! The id is made of names only — the signal, the innermost functions with their module's file name, and the
//! innermost Python function with its file's name — never addresses, lines, directories or version suffixes, so
//! ASLR, a rebuild, an edit that moves lines, a new virtualenv path or a library's minor version do not split a
//! group. What is not the crash itself is left out: the libc functions a signal is raised through (`raise`,
//! `abort`, `pthread_kill`, `__restore_rt`, …), the call machinery between a C function and its Python
//! caller (libffi, `_ctypes`, the interpreter's own frames), and frames with no name (the module stands in for
//! them). The hash is FNV-1a, whose value is fixed by its definition: the id stays the same across runs, hosts
//! and versions of the agent.
use std::hash::Hasher as _;

use serde::{Deserialize, Serialize};

use crate::aggregate::file_name;

/// Native frames from the top that go into a signature (after the plumbing is skipped).
const MAX_NATIVE_FRAMES: usize = 3;
/// Frames looked at for the innermost Python frame before giving up (a deep native stack).
const MAX_SCANNED_FRAMES: usize = 64;
/// Hex digits of the id: 64 bits, so two different crashes of one fleet practically never share one.
const ID_HEX_DIGITS: usize = 16;

/// Functions a fatal signal is raised through (glibc, musl) and the interpreter's own abort path: the crash is
/// whatever called them.
const SIGNAL_PLUMBING: &[&str] = &[
    "raise",
    "abort",
    "gsignal",
    "kill",
    "tgkill",
    "pthread_kill",
    "__pthread_kill",
    "__pthread_kill_implementation",
    "__pthread_kill_internal",
    "__restore_rt",
    "__libc_message",
    "__libc_message_impl",
    "__libc_fatal",
    "__assert_fail",
    "__assert_fail_base",
    "__assert_perror_fail",
    "__fortify_fail",
    "__chk_fail",
    "__stack_chk_fail",
    "malloc_printerr",
    "Py_FatalError",
    "_Py_FatalErrorFunc",
    "_Py_FatalErrorFormat",
    "fatal_error",
    "fatal_error_exit",
];

/// Modules that only carry a call from Python into C (ctypes through libffi): between the crashing C function
/// and its Python caller they say nothing about the crash.
const CALL_MACHINERY_MODULES: &[&str] = &["libffi.so", "_ctypes.so"];

/// A crash's signature as reports, the index and uploads carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CrashSignature {
    /// 16 hex digits, the same for the same crash on any host and run.
    #[serde(rename = "signature")]
    pub id: String,
    /// What a person reads: `SIGSEGV in crash_here ← do_crash ← handler (app.py)`.
    #[serde(rename = "signature_title")]
    pub title: String,
    /// The names the id is made of, innermost first: `function (module file)` or `qualname (file.py)`.
    #[serde(rename = "signature_frames", default)]
    pub frames: Vec<String>,
}

/// What a signature needs of one frame (of a live stack or of a report read back from disk).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameNames<'a> {
    /// `native`, `python`, `kernel`, `truncated` or `context`, as in reports.
    pub kind: &'a str,
    pub function: &'a str,
    /// The source file (Python frames: the script).
    pub file: Option<&'a str>,
    /// The module's path (native frames).
    pub module: Option<&'a str>,
}

/// One frame as it goes into a signature.
#[derive(Clone, PartialEq, Eq)]
struct Part {
    python: bool,
    /// Empty for an unnamed frame.
    function: String,
    /// The module's or script's file name, normalized.
    place: String,
}

impl Part {
    /// The frame as the title and the index show it.
    fn shown(&self) -> String {
        match (self.function.is_empty(), self.place.is_empty()) {
            (true, _) => format!("[{}]", self.place),
            (false, true) => self.function.clone(),
            (false, false) => format!("{} ({})", self.function, self.place),
        }
    }

    /// The frame in the title: functions alone, but for Python frames (the file says where in the service).
    fn in_title(&self) -> String {
        if self.python || self.function.is_empty() {
            self.shown()
        } else {
            self.function.clone()
        }
    }
}

impl CrashSignature {
    /// The signature of a thread that faulted or aborted with `signal_name`, from its stack (innermost first).
    pub(crate) fn of_fault<'a>(signal_name: &str, stack: impl IntoIterator<Item = FrameNames<'a>>) -> Self {
        let parts = signature_parts(stack);
        let title = if parts.is_empty() {
            format!("{signal_name} (no stack)")
        } else {
            let shown: Vec<String> = parts.iter().map(Part::in_title).collect();
            format!("{signal_name} in {}", shown.join(" ← "))
        };
        let mut key = format!("fault\n{signal_name}\n");
        for part in &parts {
            key.push_str(if part.python { "py:" } else { "native:" });
            key.push_str(&part.function);
            key.push('@');
            key.push_str(&part.place);
            key.push('\n');
        }
        Self { id: stable_id(&key), title, frames: parts.iter().map(Part::shown).collect() }
    }

    /// The signature of a process another process killed with `signal_name` (no stack of its own).
    pub(crate) fn of_kill(signal_name: &str) -> Self {
        Self {
            id: stable_id(&format!("killed\n{signal_name}\n")),
            title: format!("{signal_name} from another process"),
            frames: Vec::new(),
        }
    }
}

/// The frames a signature is made of, innermost first: up to [`MAX_NATIVE_FRAMES`] native ones after the signal
/// plumbing, then the innermost named Python frame (the service's code that led there), where it ends.
fn signature_parts<'a>(stack: impl IntoIterator<Item = FrameNames<'a>>) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    let mut native = 0;
    let mut leading = true;
    for frame in stack.into_iter().take(MAX_SCANNED_FRAMES) {
        let part = match frame.kind {
            "python" => {
                let function = clean_python_name(frame.function);
                if function.is_empty() {
                    continue;
                }
                Part { python: true, function, place: file_name(frame.file.unwrap_or_default()).to_owned() }
            }
            "native" => {
                let place = module_file_name(frame.module.unwrap_or_default());
                let function = clean_native_name(frame.function);
                if leading && SIGNAL_PLUMBING.contains(&function.as_str()) {
                    continue;
                }
                if !leading && is_call_machinery(&place) {
                    continue;
                }
                if native == MAX_NATIVE_FRAMES {
                    continue;
                }
                Part { python: false, function, place }
            }
            // Kernel frames (with --kernel), truncation markers, and the thread/process frames.
            _ => continue,
        };
        leading = false;
        let python = part.python;
        // Recursion (or an unnamed library's internal calls) counts once: its depth does not split a group.
        if parts.last() != Some(&part) {
            native += usize::from(!python);
            parts.push(part);
        }
        if python {
            break;
        }
    }
    parts
}

/// Whether frames of the module named `place` only carry calls: ctypes and libffi, and the interpreter itself
/// (its frames show only with `--native-python-internals`, which must not change a signature).
fn is_call_machinery(place: &str) -> bool {
    CALL_MACHINERY_MODULES.contains(&place) || place.starts_with("libpython") || place.starts_with("python")
}

/// A native function's name without what a rebuild changes: Rust's hash suffix (`::h0123456789abcdef`), GCC and
/// LLVM clone suffixes (`.isra.0`, `.constprop.1`, `.part.0`, `.cold`, `.llvm.123`), symbol versions (`@GLIBC_2.2.5`);
/// glibc's internal aliases (`__GI_abort`) as their public names. Empty for an unnamed frame (`[module+0x..]`).
fn clean_native_name(function: &str) -> String {
    if function.starts_with('[') || function.is_empty() {
        return String::new();
    }
    let mut name = function.split('@').next().unwrap_or(function);
    for clone in [".isra.", ".constprop.", ".part.", ".cold", ".lto_priv.", ".llvm.", ".localalias"] {
        if let Some(at) = name.find(clone) {
            name = &name[..at];
        }
    }
    if let Some(at) = name.rfind("::h") {
        let hash = &name[at + 3..];
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            name = &name[..at];
        }
    }
    // `__GI___pthread_kill` is `__pthread_kill`.
    name.strip_prefix("__GI_").unwrap_or(name).to_owned()
}

/// A Python qualname; empty for the frames the profiler could not name (`[unknown Python frame]`, shims).
fn clean_python_name(function: &str) -> String {
    if function.starts_with('[') {
        String::new()
    } else {
        function.to_owned()
    }
}

/// A module's file name without its directory and the parts that change with versions and builds:
/// `/usr/lib/x86_64-linux-gnu/libssl.so.3` → `libssl.so`,
/// `.../site-packages/lxml/etree.cpython-311-x86_64-linux-gnu.so` → `etree.so`, `_foo.abi3.so` → `_foo.so`.
pub(crate) fn module_file_name(path: &str) -> String {
    let name = file_name(path.strip_suffix(" (deleted)").unwrap_or(path));
    let mut name = name.to_owned();
    // `libc.so.6`, `libpython3.11.so.1.0`: the numbers after `.so` are the version.
    if let Some(at) = name.find(".so.") {
        if name[at + 4..].bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            name.truncate(at + 3);
        }
    }
    if let Some(stem) = name.strip_suffix(".so") {
        let stem = match (stem.find(".cpython-"), stem.strip_suffix(".abi3")) {
            (Some(at), _) => &stem[..at],
            (None, Some(stem)) => stem,
            (None, None) => stem,
        };
        name = format!("{stem}.so");
    }
    name
}

/// FNV-1a (64 bits) of `key` as [`ID_HEX_DIGITS`] hex digits: defined by its constants, so the same on every
/// host, run and version (std's hashers are randomized or free to change).
fn stable_id(key: &str) -> String {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(key.as_bytes());
    let id = format!("{:016x}", hasher.finish());
    id[..ID_HEX_DIGITS].to_owned()
}

/// Whether `text` could be (a prefix of) a signature id: hex digits only.
pub(crate) fn looks_like_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= ID_HEX_DIGITS && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native<'a>(function: &'a str, module: &'a str) -> FrameNames<'a> {
        FrameNames { kind: "native", function, file: None, module: Some(module) }
    }

    fn python<'a>(function: &'a str, file: &'a str) -> FrameNames<'a> {
        FrameNames { kind: "python", function, file: Some(file), module: None }
    }

    const LIBCRASH: &str = "/tmp/build-1/libcrash.so";
    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    const FFI: &str = "/usr/lib/x86_64-linux-gnu/libffi.so.8.1.2";
    const CTYPES: &str = "/usr/lib/python3.11/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so";

    fn segv_through_ctypes(app: &'static str) -> Vec<FrameNames<'static>> {
        vec![
            native("crash_here", LIBCRASH),
            native("do_crash", LIBCRASH),
            native("ffi_call_unix64", FFI),
            native("ffi_call_int", FFI),
            native("_ctypes_callproc", CTYPES),
            native("_PyObject_MakeTpCall", "/usr/bin/python3.11"),
            python("bad_handler", app),
            python("worker_main", app),
            FrameNames { kind: "context", function: "python3", file: None, module: None },
        ]
    }

    #[test]
    fn names_the_c_function_and_its_python_caller() {
        let signature = CrashSignature::of_fault("SIGSEGV", segv_through_ctypes("/srv/app/crash.py"));
        assert_eq!(signature.title, "SIGSEGV in crash_here ← do_crash ← bad_handler (crash.py)");
        assert_eq!(signature.frames, ["crash_here (libcrash.so)", "do_crash (libcrash.so)", "bad_handler (crash.py)"]);
        assert_eq!(signature.id.len(), 16);
        assert!(looks_like_id(&signature.id));
    }

    #[test]
    fn addresses_lines_directories_and_versions_do_not_change_the_id() {
        let first = CrashSignature::of_fault("SIGSEGV", segv_through_ctypes("/srv/app/crash.py"));
        // Another host: other directories, a newer libffi and libcrash, the script moved; frames with lines.
        let mut moved = segv_through_ctypes("/home/deploy/releases/42/crash.py");
        moved[0] = FrameNames {
            kind: "native",
            function: "crash_here",
            file: Some("crash.c"),
            module: Some("/opt/x/libcrash.so"),
        };
        moved[2] = native("ffi_call_unix64", "/lib64/libffi.so.7");
        let second = CrashSignature::of_fault("SIGSEGV", moved);
        assert_eq!(first, second);
        // A rebuild that cloned a function and a Rust hash suffix.
        let a = CrashSignature::of_fault(
            "SIGSEGV",
            [native("parse::h0123456789abcdef", "/a/libx.so"), native("step.isra.0", "/a/libx.so")],
        );
        let b = CrashSignature::of_fault(
            "SIGSEGV",
            [native("parse::hfedcba9876543210", "/b/libx.so.2"), native("step.constprop.3", "/b/libx.so.2")],
        );
        assert_eq!(a.id, b.id);
        // The id is fixed by the algorithm, not by this build: a change here splits every group users have.
        assert_eq!(CrashSignature::of_kill("SIGKILL").id, stable_id("killed\nSIGKILL\n"));
        assert_eq!(stable_id(""), "cbf29ce484222325");
    }

    #[test]
    fn a_different_function_or_signal_is_a_different_crash() {
        let base = CrashSignature::of_fault("SIGSEGV", segv_through_ctypes("crash.py"));
        let mut other = segv_through_ctypes("crash.py");
        other[0] = native("crash_there", LIBCRASH);
        assert_ne!(base.id, CrashSignature::of_fault("SIGSEGV", other).id);
        let mut caller = segv_through_ctypes("crash.py");
        caller[6] = python("good_handler", "crash.py");
        assert_ne!(base.id, CrashSignature::of_fault("SIGSEGV", caller).id);
        assert_ne!(base.id, CrashSignature::of_fault("SIGBUS", segv_through_ctypes("crash.py")).id);
        assert_ne!(CrashSignature::of_kill("SIGKILL").id, CrashSignature::of_fault("SIGKILL", []).id);
    }

    #[test]
    fn libc_abort_plumbing_is_skipped() {
        let direct = CrashSignature::of_fault(
            "SIGABRT",
            [native("call_abort", LIBCRASH), native("ffi_call_unix64", FFI), python("give_up", "abort.py")],
        );
        let through_libc = CrashSignature::of_fault(
            "SIGABRT",
            [
                native("__pthread_kill_implementation", LIBC),
                native("__pthread_kill_internal", LIBC),
                native("__GI___pthread_kill", LIBC),
                native("__GI_raise", LIBC),
                native("__GI_abort", LIBC),
                native("call_abort", LIBCRASH),
                native("ffi_call_unix64", FFI),
                python("give_up", "abort.py"),
            ],
        );
        assert_eq!(direct, through_libc);
        assert_eq!(through_libc.title, "SIGABRT in call_abort ← give_up (abort.py)");
    }

    #[test]
    fn unnamed_frames_count_by_module_once() {
        let one = CrashSignature::of_fault(
            "SIGSEGV",
            [
                native("[libstripped.so.1+0x1234]", "/a/libstripped.so.1"),
                native("[libstripped.so.1+0x99]", "/a/libstripped.so.1"),
                native("main", "/a/app"),
            ],
        );
        let other = CrashSignature::of_fault(
            "SIGSEGV",
            [native("[libstripped.so.2+0x5678]", "/b/libstripped.so.2"), native("main", "/b/app")],
        );
        assert_eq!(one, other);
        assert_eq!(one.title, "SIGSEGV in [libstripped.so] ← main");
    }

    #[test]
    fn at_most_three_native_frames_and_one_python_frame() {
        let deep = CrashSignature::of_fault(
            "SIGSEGV",
            ["a", "b", "c", "d", "e"]
                .map(|f| native(f, "/x/libdeep.so"))
                .into_iter()
                .chain([python("handler", "h.py"), python("main", "h.py")]),
        );
        assert_eq!(deep.title, "SIGSEGV in a ← b ← c ← handler (h.py)");
        let python_only =
            CrashSignature::of_fault("SIGSEGV", [python("[unknown Python frame]", ""), python("run", "/a/w.py")]);
        assert_eq!(python_only.title, "SIGSEGV in run (w.py)");
        assert_eq!(CrashSignature::of_fault("SIGILL", []).title, "SIGILL (no stack)");
    }

    #[test]
    fn module_names_lose_directories_and_versions() {
        assert_eq!(module_file_name("/usr/lib/x86_64-linux-gnu/libc.so.6"), "libc.so");
        assert_eq!(module_file_name("/usr/lib/libpython3.11.so.1.0"), "libpython3.11.so");
        assert_eq!(module_file_name("/venv/lib/lxml/etree.cpython-311-x86_64-linux-gnu.so"), "etree.so");
        assert_eq!(module_file_name("/x/_cffi.abi3.so"), "_cffi.so");
        assert_eq!(module_file_name("/usr/bin/python3.11"), "python3.11");
        assert_eq!(module_file_name("/tmp/libgone.so (deleted)"), "libgone.so");
        assert_eq!(module_file_name(""), "");
    }
}
