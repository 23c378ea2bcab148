//! Reading the crash reports the profiler writes: `crash-PID-SIGNAME-MILLIS.json` (parsed with serde_json, read
//! through panicking accessors that show the value they did not expect), the `.txt` next to it, and the stack.
use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

/// One crash report: `crash-PID-SIGNAME-MILLIS.json` and the files next to it.
#[derive(Debug)]
pub struct Report {
    /// The path without extension: `DIR/crash-PID-SIGNAME-MILLIS`.
    pub base: PathBuf,
    pub json: Value,
    /// The `.txt` file.
    pub text: String,
}

impl Report {
    /// `base` + `.extension`, when that file exists.
    pub fn file(&self, extension: &str) -> Option<PathBuf> {
        let path = PathBuf::from(format!("{}.{extension}", self.base.display()));
        path.is_file().then_some(path)
    }

    /// The stack, innermost first.
    pub fn stack(&self) -> Vec<StackFrame> {
        self.json.field("stack").array().iter().map(StackFrame::from_json).collect()
    }

    /// The process's other threads at the crash (`threads`), by thread id.
    pub fn threads(&self) -> Vec<ThreadAtCrash> {
        self.json
            .field("threads")
            .array()
            .iter()
            .map(|thread| ThreadAtCrash {
                tid: thread.field("tid").i64() as u32,
                name: thread.field("name").str().to_owned(),
                state: thread.field("state").str().to_owned(),
                syscall: thread.field("syscall").opt_str().map(str::to_owned),
                gil: thread.field("gil").opt_str().map(str::to_owned),
                stack: thread.field("stack").array().iter().map(StackFrame::from_json).collect(),
            })
            .collect()
    }

    /// The stack, one frame a line, for failure messages.
    pub fn stack_text(&self) -> String {
        self.stack().iter().enumerate().map(|(i, f)| format!("  #{i:<3} {f}\n")).collect()
    }
}

/// Another thread of the crashed process, as the report shows it.
#[derive(Clone, Debug)]
pub struct ThreadAtCrash {
    pub tid: u32,
    pub name: String,
    /// `running` or `waiting`.
    pub state: String,
    /// The system call it waited in.
    pub syscall: Option<String>,
    pub gil: Option<String>,
    pub stack: Vec<StackFrame>,
}

impl ThreadAtCrash {
    /// The function names of its stack, innermost first.
    pub fn functions(&self) -> Vec<&str> {
        self.stack.iter().map(|frame| frame.function.as_str()).collect()
    }
}

/// A frame of a report's stack.
#[derive(Clone, Debug, PartialEq)]
pub struct StackFrame {
    pub kind: String,
    pub function: String,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub module: Option<String>,
    pub build_id: Option<String>,
    pub inlined: bool,
}

impl StackFrame {
    fn from_json(json: &Value) -> StackFrame {
        let opt_str = |key: &str| json.field(key).opt_str().map(str::to_owned);
        StackFrame {
            kind: json.field("kind").str().to_owned(),
            function: json.field("function").str().to_owned(),
            file: opt_str("file"),
            line: json.field("line").opt_i64(),
            module: opt_str("module"),
            build_id: opt_str("build_id"),
            inlined: json.field("inlined").bool(),
        }
    }

    pub fn is_python(&self) -> bool {
        self.kind == "python"
    }

    /// Whether this native frame is in the module at `path`.
    pub fn in_module(&self, path: &Path) -> bool {
        self.module.as_deref() == path.to_str()
    }
}

impl std::fmt::Display for StackFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.function)?;
        if let Some(file) = &self.file {
            write!(f, " at {file}:{}", self.line.map(|l| l.to_string()).unwrap_or_default())?;
        }
        if let Some(module) = &self.module {
            write!(f, " [{module}]")?;
        }
        if self.inlined {
            write!(f, " (inlined)")?;
        }
        Ok(())
    }
}

/// Every crash report in `dir`, oldest first; the directory may also hold nothing else than report files.
pub fn read_reports(dir: &Path) -> Vec<Report> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut bases: Vec<PathBuf> = entries
        .map(|entry| entry.expect("listing the crash directory").path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Only regular files: a link planted there (tests of hostile directories) is no report.
            name.starts_with("crash-")
                && name.ends_with(".json")
                && fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        })
        .map(|path| path.with_extension(""))
        .collect();
    // The fourth part of the name is the time in milliseconds (a fifth, random, follows when the name was taken).
    bases.sort_by_key(|base| {
        let name = base.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
        (name.split('-').nth(3).and_then(|millis| millis.parse::<u64>().ok()), name)
    });
    bases
        .into_iter()
        .map(|base| {
            let read = |extension: &str| {
                let path = base.with_extension(extension);
                fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
            };
            let json = parse_json(&read("json"));
            let text = read("txt");
            Report { base, json, text }
        })
        .collect()
}

/// The names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Reading a report's JSON in a test: each accessor panics, showing the value, when it holds another type.
pub trait Field {
    /// The member `key` of an object; `Null` when absent. Panics unless this is an object.
    fn field(&self, key: &str) -> &Value;
    fn has(&self, key: &str) -> bool;
    fn str(&self) -> &str;
    /// A string, or `None` for null.
    fn opt_str(&self) -> Option<&str>;
    fn i64(&self) -> i64;
    /// An integer, or `None` for null.
    fn opt_i64(&self) -> Option<i64>;
    fn f64(&self) -> f64;
    fn bool(&self) -> bool;
    fn array(&self) -> &[Value];
}

static NULL: Value = Value::Null;

impl Field for Value {
    fn field(&self, key: &str) -> &Value {
        match self {
            Value::Object(members) => members.get(key).unwrap_or(&NULL),
            other => panic!("expected an object with `{key}`, got {other:?}"),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.as_object().is_some_and(|members| members.contains_key(key))
    }

    fn str(&self) -> &str {
        self.opt_str().unwrap_or_else(|| panic!("expected a string, got {self:?}"))
    }

    fn opt_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::Null => None,
            other => panic!("expected a string or null, got {other:?}"),
        }
    }

    fn i64(&self) -> i64 {
        self.opt_i64().unwrap_or_else(|| panic!("expected a number, got {self:?}"))
    }

    fn opt_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .or_else(|| panic!("expected an integer or null, got {n}")),
            Value::Null => None,
            other => panic!("expected an integer or null, got {other:?}"),
        }
    }

    fn f64(&self) -> f64 {
        match self {
            Value::Number(n) => n.as_f64().unwrap_or_else(|| panic!("{n} is no f64")),
            other => panic!("expected a number, got {other:?}"),
        }
    }

    fn bool(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            other => panic!("expected a boolean, got {other:?}"),
        }
    }

    fn array(&self) -> &[Value] {
        match self {
            Value::Array(items) => items,
            other => panic!("expected an array, got {other:?}"),
        }
    }
}

/// Parses one report's JSON; panics with the text when it is not JSON.
pub fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("bad JSON ({err}); the text:\n{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_report_shaped_document() {
        let json = parse_json(
            r#"{"kind": {"killed": {"sender_pid": 12}}, "fault_address": null, "si_code": -6,
               "stack": [{"function": "a\"b\u00e9", "line": 3, "inlined": false}], "window_seconds": 30.0}"#,
        );
        assert_eq!(json.field("kind").field("killed").field("sender_pid").i64(), 12);
        assert!(json.field("fault_address").is_null());
        assert_eq!(json.field("si_code").i64(), -6);
        assert_eq!(json.field("stack").array()[0].field("function").str(), "a\"bé");
        assert_eq!(json.field("window_seconds").f64(), 30.0);
        assert!(!json.has("missing") && json.field("missing").is_null());
    }
}
