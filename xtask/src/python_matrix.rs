//! The README's Python version matrix, from what `cargo xtask test` ran: the Python tests that check every
//! interpreter append a line per interpreter to the file named by `PROFILER_PYTHON_MATRIX` once they pass
//! (tests/support/matrix.rs), and after a run in which every test passed and every check ran on every interpreter
//! (the whole suite, or those tests alone) this turns those lines into the table. No one writes it by hand, so it
//! shows the versions (lxml and numpy too) the tests really ran.
use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{bail, Context as _, Result};

use crate::Workspace;

/// The variable the tests read (tests/support/matrix.rs `MATRIX_VAR`).
pub const MATRIX_VAR: &str = "PROFILER_PYTHON_MATRIX";

/// The checks, as the tests key them, and the README's column for each, in its order.
const COLUMNS: [(&str, &str); 8] = [
    ("shares", "CPU shares"),
    ("lines", "line numbers"),
    ("threads-gil", "threads, GIL"),
    ("thread-names", "thread names"),
    ("off-cpu-waits", "off-CPU waits"),
    ("crash", "crash report"),
    ("dump", "dump"),
    ("asyncio", "asyncio tasks"),
];

/// Where the tests write their lines.
pub fn matrix_file(ws: &Workspace) -> std::path::PathBuf {
    ws.target_dir.join("python-matrix.tsv")
}

/// One interpreter's row.
#[derive(Debug, Default, PartialEq)]
struct Row {
    version: String,
    lxml: String,
    numpy: String,
    origin: String,
    cells: BTreeMap<String, String>,
}

/// The rows of `text` (the tests' lines) by interpreter name; a malformed line is an error naming it.
fn parse(text: &str) -> Result<BTreeMap<String, Row>> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [check, name, cell, version, lxml, numpy, origin] = fields[..] else {
            bail!("line {}: 7 tab-separated fields expected, found {}: {line:?}", number + 1, fields.len());
        };
        if !COLUMNS.iter().any(|&(key, _)| key == check) {
            bail!("line {}: unknown check {check:?}", number + 1);
        }
        let row = rows.entry(name.to_owned()).or_default();
        (row.version, row.lxml, row.numpy, row.origin) = (version.into(), lxml.into(), numpy.into(), origin.into());
        row.cells.insert(check.to_owned(), cell.to_owned());
    }
    Ok(rows)
}

/// A version's numbers, for ordering the rows (`3.13.5` before `3.14.0`; a free-threaded build after the default
/// one of its version, as its name sorts).
fn version_key(version: &str) -> Vec<u32> {
    version.split('.').map(|part| part.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().unwrap_or(0)).collect()
}

/// The Markdown table of `rows`: one row per interpreter by version, a column per check (`–` where it did not run).
fn render(rows: &BTreeMap<String, Row>) -> String {
    let mut ordered: Vec<(&String, &Row)> = rows.iter().collect();
    ordered.sort_by(|a, b| version_key(&a.1.version).cmp(&version_key(&b.1.version)).then(a.0.cmp(b.0)));
    let mut table = String::from("| Python | where the tests got it | lxml | numpy |");
    let mut rule = String::from("|---|---|---|---|");
    for (_, column) in COLUMNS {
        table.push_str(&format!(" {column} |"));
        rule.push_str("---|");
    }
    table.push('\n');
    table.push_str(&rule);
    table.push('\n');
    for (name, row) in ordered {
        let free_threaded = if name.ends_with('t') { " (free-threaded)" } else { "" };
        table.push_str(&format!("| {}{free_threaded} | {} | {} | {} |", row.version, row.origin, row.lxml, row.numpy));
        for (key, _) in COLUMNS {
            table.push_str(&format!(" {} |", row.cells.get(key).map_or("–", String::as_str)));
        }
        table.push('\n');
    }
    table
}

/// Rewrites the README's version matrix from `file`, after a test run in which everything passed. Leaves the README
/// alone, saying why, when the run covered only some interpreters or checks, or recorded nothing (not root, or
/// the Python tests filtered out).
pub fn update_readme(ws: &Workspace, file: &Path) -> Result<()> {
    if std::env::var_os("PROFILER_TEST_PYTHONS").is_some() {
        eprintln!(
            "python matrix: PROFILER_TEST_PYTHONS is set, so not every interpreter ran: the README is left alone"
        );
        return Ok(());
    }
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("python matrix: the Python tests recorded nothing: the README is left alone");
            return Ok(());
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", file.display())),
    };
    let rows = parse(&text).with_context(|| format!("reading {}", file.display()))?;
    if let Some((name, _)) = rows.iter().find(|(_, row)| row.cells.len() < COLUMNS.len()) {
        eprintln!("python matrix: not every check ran on {name}: the README is left alone");
        return Ok(());
    }
    crate::readme::replace_block(ws, "pythons", "cargo xtask test", &render(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = "shares\tsid-3.15\t✓\t3.15.2\t6.0.2\t2.3.5\tDebian GNU/Linux forky/sid root, python3.15\n\
        shares\tfocal-3.8\t✓\t3.8.10\t4.5.0\t1.17.4\tUbuntu 20.04.6 LTS root, python3\n\
        asyncio\tfreethreaded-3.13t\tnot read (said so)\t3.13.5\t6.0.2\t2.3.5\tbuilt from source\n\
        asyncio\tfocal-3.8\t✓\t3.8.10\t4.5.0\t1.17.4\tUbuntu 20.04.6 LTS root, python3\n";

    #[test]
    fn a_row_per_interpreter_by_version_with_a_cell_per_check_that_ran() {
        let table = render(&parse(LINES).unwrap());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("| Python | where the tests got it | lxml | numpy | CPU shares |"), "{table}");
        assert_eq!(
            lines[2],
            "| 3.8.10 | Ubuntu 20.04.6 LTS root, python3 | 4.5.0 | 1.17.4 | ✓ | – | – | – | – | – | – | ✓ |"
        );
        assert!(lines[3].starts_with("| 3.13.5 (free-threaded) | built from source |"), "{table}");
        assert!(lines[3].ends_with(" not read (said so) |"), "{table}");
        assert!(lines[4].starts_with("| 3.15.2 |"), "{table}");
    }

    #[test]
    fn malformed_lines_are_refused_by_number() {
        let err = parse("shares\tx\n").unwrap_err().to_string();
        assert!(err.contains("line 1: 7 tab-separated fields"), "{err}");
        let err = parse("speed\ta\t✓\t3.11.2\t4\t1\there\n").unwrap_err().to_string();
        assert!(err.contains("unknown check \"speed\""), "{err}");
    }
}
