//! `--labels FILE`: rules that give samples labels by the frames on their stack, so an app's own labels (the ones
//! its owners would set with an SDK's `tag_wrapper` around each handler) need no code change.
//!
//! ```toml
//! [[rule]]
//! function = "get_phivolcs_earthquakes"
//! labels = { endpoint = "phivolcs", data_source = "external_api" }
//! ```
//!
//! A rule matches a frame by any of `function` (the function's own name), `qualname` (Python's qualified name,
//! `Scheduler.run`; Pythons before 3.11 give only the bare name) and `file` (the frame's source path; a pattern
//! without `/` matches the file's name, one with `/` the whole path, `**` spanning directories); each is a glob
//! (`get_*`), and a rule with several matches a frame that all of them match.
//!
//! Which frame wins: for each label key, the innermost frame (nearest the leaf) that a rule setting that key
//! matches; when several such rules match that frame, the first in the file. So a rule on a helper says more than
//! one on the handler that called it, for the keys it sets, and the handler's rule still sets the others.
//!
//! The file is read once, when the command line is resolved: a bad file stops the command before anything is
//! loaded, with one line naming the file, the line and what is wrong.
use std::{collections::BTreeMap, fmt, ops::Range, path::Path};

use anyhow::{Context as _, Result};
use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;
use toml::Spanned;

use super::endpoint;
use crate::aggregate::{Frame, FrameKind};

/// Label keys the profiler sets itself (and Pyroscope's own), which a rule may not set.
const RESERVED_KEYS: &[&str] =
    &["pid", "thread_id", "thread_name", "gil", "gil_waiters", "wait", "crash", "service_name", "__name__"];

/// The parsed rules, in file order.
#[derive(Clone, Default)]
pub(crate) struct Rules {
    rules: Vec<Rule>,
}

#[derive(Clone)]
struct Rule {
    function: Option<GlobMatcher>,
    qualname: Option<GlobMatcher>,
    file: Option<FileGlob>,
    /// In file order. Keys live as long as the profiler: they are `&'static` like the profiler's own label keys,
    /// made once per distinct key when the file is read.
    labels: Vec<(&'static str, String)>,
}

#[derive(Clone)]
struct FileGlob {
    matcher: GlobMatcher,
    /// The pattern has no `/`: it matches the file's name.
    name_only: bool,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rules({} rules)", self.rules.len())
    }
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<Spanned<RuleEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    function: Option<Spanned<String>>,
    qualname: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    labels: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
}

impl Rules {
    /// Reads and checks the rules file at `path`.
    pub(crate) fn read(path: &Path) -> Result<Rules> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the labels file {}", path.display()))?;
        Rules::parse(&text).map_err(|err| anyhow::anyhow!("{}:{}: {}", path.display(), err.line, err.message))
    }

    /// Parses rules; an error says on which line (1-based) and what is wrong, in one line.
    pub(crate) fn parse(text: &str) -> std::result::Result<Rules, RuleError> {
        let file: RulesFile = toml::from_str(text).map_err(|err| {
            let message = err.message().trim().replace('\n', "; ");
            RuleError::at(text, err.span().unwrap_or(0..0), message)
        })?;
        if file.rule.is_empty() {
            return Err(RuleError {
                line: 1,
                message: "no rules: add `[[rule]]` tables, each with a `function`, `qualname` or `file` and `labels`"
                    .into(),
            });
        }
        let rules = file.rule.into_iter().map(|entry| Rule::new(text, entry)).collect::<Result<_, _>>()?;
        Ok(Rules { rules })
    }

    /// The labels the rules give a stack (leaf first), by the precedence in the module's doc.
    pub(crate) fn labels_of(&self, frames: &[Frame]) -> Vec<(&'static str, &str)> {
        let mut found: Vec<(&'static str, &str)> = Vec::new();
        if self.rules.is_empty() {
            return found;
        }
        for frame in frames.iter().filter(|frame| matches!(frame.kind, FrameKind::Python | FrameKind::Native)) {
            for rule in self.rules.iter().filter(|rule| rule.matches(frame)) {
                for (key, value) in &rule.labels {
                    if !found.iter().any(|(known, _)| known == key) {
                        found.push((key, value));
                    }
                }
            }
        }
        found
    }
}

impl Rule {
    fn new(text: &str, entry: Spanned<RuleEntry>) -> std::result::Result<Rule, RuleError> {
        let span = entry.span();
        let entry = entry.into_inner();
        let glob = |pattern: &Spanned<String>, whole_path: bool| {
            GlobBuilder::new(pattern.get_ref())
                .literal_separator(whole_path)
                .build()
                .map(|glob| glob.compile_matcher())
                .map_err(|err| RuleError::at(text, pattern.span(), format!("bad pattern: {}", err.kind())))
        };
        let function = entry.function.as_ref().map(|p| glob(p, false)).transpose()?;
        let qualname = entry.qualname.as_ref().map(|p| glob(p, false)).transpose()?;
        let file = entry
            .file
            .as_ref()
            .map(|p| {
                let name_only = !p.get_ref().contains('/');
                glob(p, !name_only).map(|matcher| FileGlob { matcher, name_only })
            })
            .transpose()?;
        if function.is_none() && qualname.is_none() && file.is_none() {
            return Err(RuleError::at(text, span, "a rule needs a `function`, `qualname` or `file` to match".into()));
        }
        let Some(labels) = entry.labels else {
            return Err(RuleError::at(text, span, "a rule needs `labels = { key = \"value\", ... }`".into()));
        };
        if labels.get_ref().is_empty() {
            return Err(RuleError::at(text, labels.span(), "`labels` is empty".into()));
        }
        let mut checked = Vec::new();
        for (key, value) in labels.into_inner() {
            check_key(key.get_ref()).map_err(|message| RuleError::at(text, key.span(), message))?;
            if value.get_ref().is_empty() {
                return Err(RuleError::at(text, value.span(), format!("label `{}` has an empty value", key.get_ref())));
            }
            checked.push((static_key(key.into_inner()), value.into_inner()));
        }
        Ok(Rule { function, qualname, file, labels: checked })
    }

    fn matches(&self, frame: &Frame) -> bool {
        let function = |matcher: &GlobMatcher| {
            let name =
                if frame.kind == FrameKind::Python { endpoint::bare_name(&frame.function) } else { &frame.function };
            matcher.is_match(name)
        };
        let file = |glob: &FileGlob| {
            let path = frame.file.as_deref().or(frame.module.as_ref().map(|m| m.path.as_str()));
            path.is_some_and(|path| {
                let subject = if glob.name_only { path.rsplit('/').next().unwrap_or(path) } else { path };
                glob.matcher.is_match(subject)
            })
        };
        self.function.as_ref().is_none_or(function)
            && self.qualname.as_ref().is_none_or(|matcher| matcher.is_match(&*frame.function))
            && self.file.as_ref().is_none_or(file)
    }
}

/// A label key Pyroscope and Grafana accept (a Prometheus label name) that the profiler does not set itself.
fn check_key(key: &str) -> std::result::Result<(), String> {
    let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("label key `{key}` must be letters, digits and `_`, not starting with a digit"));
    }
    if RESERVED_KEYS.contains(&key) {
        return Err(format!("label key `{key}` is set by the profiler itself; pick another name"));
    }
    Ok(())
}

/// A `&'static str` for a key of the rules file: every distinct key is kept once for the profiler's lifetime (a
/// rules file is read once per run, with a handful of keys), so rule labels are the same type as the profiler's.
fn static_key(key: String) -> &'static str {
    use std::sync::Mutex;
    static KEYS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut keys = KEYS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = keys.iter().find(|known| **known == key) {
        return known;
    }
    let key: &'static str = Box::leak(key.into_boxed_str());
    keys.push(key);
    key
}

/// What is wrong with a rules file, and on which line.
#[derive(Debug)]
pub(crate) struct RuleError {
    pub line: usize,
    pub message: String,
}

impl RuleError {
    fn at(text: &str, span: Range<usize>, message: String) -> RuleError {
        let line = text.get(..span.start.min(text.len())).map_or(1, |before| before.matches('\n').count() + 1);
        RuleError { line, message }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::Module;

    fn py(function: &str, file: &str) -> Frame {
        Frame::python(function, file)
    }

    fn error(text: &str) -> RuleError {
        match Rules::parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(err) => err,
        }
    }

    #[test]
    fn the_owners_tag_wrapper_as_a_rule() {
        let rules = Rules::parse(
            r#"
            [[rule]]
            function = "get_phivolcs_earthquakes"
            labels = { endpoint = "phivolcs", data_source = "external_api" }
            "#,
        )
        .unwrap();
        let stack = [py("fetch", "/srv/app/feeds.py"), py("get_phivolcs_earthquakes", "/srv/app/app.py")];
        assert_eq!(rules.labels_of(&stack), [("data_source", "external_api"), ("endpoint", "phivolcs")]);
        assert!(rules.labels_of(&[py("other", "/srv/app/app.py")]).is_empty());
    }

    #[test]
    fn the_innermost_matching_frame_wins_per_key_then_the_first_rule() {
        let rules = Rules::parse(
            r#"
            [[rule]]
            qualname = "Api.get_*"
            labels = { endpoint = "api", data_source = "db" }
            [[rule]]
            file = "**/feeds/*.py"
            labels = { data_source = "external_api" }
            [[rule]]
            function = "fetch"
            labels = { data_source = "never: an earlier rule matches the same frame" }
            "#,
        )
        .unwrap();
        let stack = [
            py("json_loads", "/usr/lib/python3.11/json/__init__.py"),
            py("fetch", "/srv/app/feeds/phivolcs.py"),
            py("Api.get_quakes", "/srv/app/app.py"),
        ];
        assert_eq!(rules.labels_of(&stack), [("data_source", "external_api"), ("endpoint", "api")]);
        // On Python 3.10 the frame is `get_quakes`: the qualified name does not match, `function` would.
        assert!(rules.labels_of(&[py("get_quakes", "/srv/app/app.py")]).is_empty());
    }

    #[test]
    fn file_patterns_without_a_slash_match_the_file_name() {
        let rules = Rules::parse("[[rule]]\nfile = \"weather*.py\"\nlabels = { area = \"weather\" }\n").unwrap();
        assert_eq!(rules.labels_of(&[py("report", "/srv/app/weather.py")]), [("area", "weather")]);
        assert!(rules.labels_of(&[py("report", "/srv/weather/app.py")]).is_empty());
        // And native frames by their source file or else their module.
        let native = Frame {
            module: Some(Arc::new(Module { path: "/usr/lib/libxml2.so.2".into(), build_id: None, executable: false })),
            ..Frame::native("xmlParseDocument")
        };
        let rules = Rules::parse("[[rule]]\nfile = \"libxml2.so*\"\nlabels = { lib = \"xml\" }\n").unwrap();
        assert_eq!(rules.labels_of(&[native]), [("lib", "xml")]);
    }

    #[test]
    fn several_matchers_must_all_match() {
        let rules =
            Rules::parse("[[rule]]\nfunction = \"run\"\nfile = \"app.py\"\nlabels = { job = \"refresh\" }\n").unwrap();
        assert_eq!(rules.labels_of(&[py("Scheduler.run", "/srv/app/app.py")]), [("job", "refresh")]);
        assert!(rules.labels_of(&[py("Thread.run", "/usr/lib/python3.11/threading.py")]).is_empty());
    }

    #[test]
    fn errors_name_the_line_and_what_is_wrong_in_one_line() {
        let cases = [
            ("[[rule]]\nfunction = \"a\"\nlabels = { endpoint = \"x\" \n", 3, ""),
            ("[[rule]]\nfunction = \"a\"\nlabel = { endpoint = \"x\" }\n", 3, "label"),
            (
                "[[rule]]\nfile = \"a.py\"\nlabels = { x = \"1\" }\n\n[[rule]]\nlabels = { endpoint = \"x\" }\n",
                5,
                "needs a `function`",
            ),
            ("[[rule]]\nfunction = \"a\"\n", 1, "needs `labels"),
            ("[[rule]]\nfunction = \"a\"\nlabels = {}\n", 3, "empty"),
            ("[[rule]]\nfunction = \"a[\"\nlabels = { endpoint = \"x\" }\n", 2, "bad pattern"),
            ("[[rule]]\nfunction = \"a\"\nlabels = { \"my-key\" = \"x\" }\n", 3, "my-key"),
            ("[[rule]]\nfunction = \"a\"\n\nlabels = { pid = \"x\" }\n", 4, "set by the profiler"),
            ("[[rule]]\nfunction = \"a\"\nlabels = { endpoint = 3 }\n", 3, "string"),
            ("[[rule]]\nfunction = \"a\"\nlabels = { endpoint = \"\" }\n", 3, "empty value"),
            ("# nothing\n", 1, "no rules"),
        ];
        for (text, line, says) in cases {
            let err = error(text);
            assert_eq!(err.line, line, "{text}: {err:?}");
            assert!(err.message.contains(says), "{text}: {err:?}");
            assert!(!err.message.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn a_bad_file_is_one_line_naming_the_file_and_line() {
        let dir = crate::test_support::TempDir::new("labels", "bad");
        let path = dir.0.join("labels.toml");
        std::fs::write(&path, "[[rule]]\nfunction = \"a\"\nlabels = { pid = \"1\" }\n").unwrap();
        let err = format!("{:#}", Rules::read(&path).unwrap_err());
        assert!(err.starts_with(&format!("{}:3: label key `pid`", path.display())), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = format!("{:#}", Rules::read(&dir.0.join("missing.toml")).unwrap_err());
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn keys_are_kept_once() {
        assert!(std::ptr::eq(static_key("team".into()), static_key("team".into())));
    }
}
