//! The README's generated blocks: text between `<!-- NAME:begin (written by `…`) -->` and `<!-- NAME:end -->`
//! that a task writes from what it ran (the tested kernels, the Python version matrix), never edited by hand.
use std::fs;

use anyhow::{bail, Context as _, Result};

use crate::Workspace;

/// Replaces the block `name` of the README with `body` (whole lines); `writer` is the task named in its begin
/// marker. Says so when the README changed.
pub fn replace_block(ws: &Workspace, name: &str, writer: &str, body: &str) -> Result<()> {
    let path = ws.root.join("README.md");
    let readme = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let begin_marker = format!("<!-- {name}:begin (written by `{writer}`) -->");
    let end_marker = format!("<!-- {name}:end -->");
    let (Some(begin), Some(end)) = (readme.find(&begin_marker), readme.find(&end_marker)) else {
        bail!("{} has no {begin_marker} … {end_marker} block to write into", path.display());
    };
    if end < begin {
        bail!("{}: {end_marker} comes before {begin_marker}", path.display());
    }
    let updated = format!("{}{begin_marker}\n{body}{}", &readme[..begin], &readme[end..]);
    if updated != readme {
        fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("{name}: updated its block in {}", path.display());
    }
    Ok(())
}
