//! Reading what the profiler wrote: the stderr summary line, folded stacks, and gzipped pprof.
use std::{fs, io::Read, path::Path};

use profiler::pprof::proto;
use prost::Message as _;

/// The summary line: `N samples of T threads in S s, L lost; P% of stacks unwound to the thread's root`.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub samples: u64,
    pub threads: u64,
    pub seconds: f64,
    pub lost: u64,
    pub complete_percent: f64,
}

impl Summary {
    pub fn find(stderr: &str) -> Summary {
        stderr
            .lines()
            .find_map(Summary::parse)
            .unwrap_or_else(|| panic!("no summary line (`N samples of T threads in S s, L lost; ...`) in:\n{stderr}"))
    }

    fn parse(line: &str) -> Option<Summary> {
        let (samples, rest) = line.split_once(" samples of ")?;
        let (threads, rest) = rest.split_once(" threads in ")?;
        let (seconds, rest) = rest.split_once(" s, ")?;
        let (lost, rest) = rest.split_once(" lost; ")?;
        let (percent, _) = rest.split_once("% of stacks")?;
        Some(Summary {
            samples: samples.parse().ok()?,
            threads: threads.parse().ok()?,
            seconds: seconds.parse().ok()?,
            lost: lost.parse().ok()?,
            complete_percent: percent.parse().ok()?,
        })
    }
}

/// A folded-stacks file: one `root;…;leaf count` line per distinct stack. Frame 0 is the process, frame 1 the
/// thread, then native frames from the thread's root to the leaf.
#[derive(Clone, Debug)]
pub struct Folded {
    pub stacks: Vec<(Vec<String>, u64)>,
}

impl Folded {
    pub fn read(path: &Path) -> Folded {
        let text = fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        Folded::parse(&text)
    }

    pub fn parse(text: &str) -> Folded {
        let stacks = text
            .lines()
            .map(|line| {
                // Frames may contain spaces (`[truncated: ...]`); the count is after the last one.
                let (stack, count) =
                    line.rsplit_once(' ').unwrap_or_else(|| panic!("folded line without count: {line:?}"));
                let count = count.parse().unwrap_or_else(|_| panic!("folded line with a bad count: {line:?}"));
                (stack.split(';').map(str::to_owned).collect(), count)
            })
            .collect();
        Folded { stacks }
    }

    pub fn total(&self) -> u64 {
        self.stacks.iter().map(|(_, count)| count).sum()
    }

    /// The stacks of the thread named `thread` (frame 1), with the two synthetic root frames removed.
    pub fn thread(&self, thread: &str) -> Vec<(&[String], u64)> {
        self.stacks
            .iter()
            .filter(|(frames, _)| frames.get(1).is_some_and(|name| name == thread))
            .map(|(frames, count)| (&frames[2..], *count))
            .collect()
    }

    /// Thread names (frame 1) with their sample counts.
    pub fn threads(&self) -> Vec<(String, u64)> {
        let mut threads: Vec<(String, u64)> = Vec::new();
        for (frames, count) in &self.stacks {
            let name = frames.get(1).cloned().unwrap_or_default();
            match threads.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += count,
                None => threads.push((name, *count)),
            }
        }
        threads.sort();
        threads
    }
}

/// Samples (of `stacks`, as [`Folded::thread`] gives them) for which `pick` holds.
pub fn count_where(stacks: &[(&[String], u64)], pick: impl Fn(&[String]) -> bool) -> u64 {
    stacks.iter().filter(|(frames, _)| pick(frames)).map(|(_, count)| count).sum()
}

/// Whether a frame marks a stack cut short.
pub fn is_truncation(frame: &str) -> bool {
    frame.starts_with("[truncated")
}

/// Reads a gzipped pprof file.
pub fn read_pprof(path: &Path) -> proto::Profile {
    let file = fs::File::open(path).unwrap_or_else(|err| panic!("opening {}: {err}", path.display()));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut raw)
        .unwrap_or_else(|err| panic!("{} is not gzip: {err}", path.display()));
    let profile = proto::Profile::decode(&raw[..])
        .unwrap_or_else(|err| panic!("{} is not a pprof protobuf: {err}", path.display()));
    crate::go_pprof::assert_go_pprof_reads(path);
    profile
}
