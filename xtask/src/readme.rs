//! The README's generated blocks: text between `<!-- NAME:begin (written by `…`) -->` and `<!-- NAME:end -->`
//! that a task writes from what it ran (the tested kernels, the Python version matrix), never edited by hand; and
//! the same in bench/RESULTS.md for the long soak, which `cargo xtask bench` does not run.
use std::{fs, path::Path};

use anyhow::{bail, Context as _, Result};

use crate::Workspace;

/// Replaces the block `name` of the README with `body` (whole lines); `writer` is the task named in its begin
/// marker. Says so when the README changed.
pub fn replace_block(ws: &Workspace, name: &str, writer: &str, body: &str) -> Result<()> {
    replace_block_in(&ws.root.join("README.md"), name, writer, body, false)
}

/// [`replace_block`] for any Markdown file; `append` adds the block at the end of a file that has none yet (a
/// section one task adds to a file another task writes, such as the soak's in bench/RESULTS.md).
pub fn replace_block_in(path: &Path, name: &str, writer: &str, body: &str, append: bool) -> Result<()> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let begin_marker = format!("<!-- {name}:begin (written by `{writer}`) -->");
    let end_marker = format!("<!-- {name}:end -->");
    let updated = match (text.find(&begin_marker), text.find(&end_marker)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{begin_marker}\n{body}{}", &text[..begin], &text[end..])
        }
        (Some(_), Some(_)) => bail!("{}: {end_marker} comes before {begin_marker}", path.display()),
        _ if append => {
            let separator = if text.ends_with('\n') { "" } else { "\n" };
            format!("{text}{separator}\n{begin_marker}\n{body}{end_marker}\n")
        }
        _ => bail!("{} has no {begin_marker} … {end_marker} block to write into", path.display()),
    };
    if updated != text {
        fs::write(path, updated).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("{name}: updated its block in {}", path.display());
    }
    Ok(())
}

/// The block `name` of `text`, markers included, for a task that rewrites a whole file to keep what another task
/// wrote into it.
pub fn block<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let begin = text.find(&format!("<!-- {name}:begin"))?;
    let end_marker = format!("<!-- {name}:end -->");
    let end = text[begin..].find(&end_marker)? + begin + end_marker.len();
    Some(&text[begin..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The soak's section: appended to a file without one, replaced in place after, kept by a whole-file rewrite.
    #[test]
    fn a_block_is_appended_then_replaced_and_can_be_carried_over() {
        let path = std::env::temp_dir().join(format!("xtask-readme-block-{}.md", std::process::id()));
        fs::write(&path, "# Benchmarks\n\nbody\n").unwrap();
        replace_block_in(&path, "soak", "cargo xtask soak", "first\n", true).unwrap();
        replace_block_in(&path, "soak", "cargo xtask soak", "second\n", true).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "# Benchmarks\n\nbody\n\n<!-- soak:begin (written by `cargo xtask soak`) -->\nsecond\n<!-- soak:end -->\n"
        );
        assert_eq!(
            block(&text, "soak"),
            Some("<!-- soak:begin (written by `cargo xtask soak`) -->\nsecond\n<!-- soak:end -->")
        );
        assert_eq!(block(&text, "kernels"), None);
        // Without `append`, a missing block is an error, as for the README.
        assert!(replace_block_in(&path, "kernels", "cargo xtask kernels", "x\n", false).is_err());
        let _ = fs::remove_file(&path);
    }
}
