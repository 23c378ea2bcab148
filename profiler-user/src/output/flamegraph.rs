//! Interactive flame graph SVG (drawn by inferno from our folded stacks): the way to look at a recording without
//! a server. Frames are coloured by kind so native, Python and kernel code can be told apart at a glance.

use std::io::Write;

use anyhow::{bail, Context as _};
use inferno::flamegraph::color::{Color, PaletteMap};
use inferno::flamegraph::{self as inferno_fg, Options};

use super::folded;
use crate::aggregate::{FrameKind, Profile, ProfileKind};

/// Writes the SVG; fails on a profile without samples, which would only draw an error message.
pub(crate) fn write_svg(profile: &Profile, title: &str, out: impl Write) -> anyhow::Result<()> {
    let lines = folded::lines(profile);
    if lines.is_empty() {
        bail!("no samples were recorded, so there is no flame graph to draw");
    }
    // inferno looks every box up here by its text before choosing a colour itself.
    let mut palette = PaletteMap::default();
    for frame in &profile.frames {
        let text = folded::frame_text(frame);
        if palette.get(&text).is_none() {
            let color = color(frame.kind, &text);
            palette.insert(text, color);
        }
    }
    let mut options = Options::default();
    options.title = title.to_owned();
    options.subtitle = Some(subtitle(profile));
    options.count_name = folded::count_unit(profile).to_owned();
    options.deterministic = true;
    options.palette_map = Some(&mut palette);
    inferno_fg::from_lines(&mut options, lines.iter().map(String::as_str), out).context("drawing the flame graph")
}

fn subtitle(profile: &Profile) -> String {
    let samples = profile.total_samples();
    let secs = profile.duration_ns as f64 / 1e9;
    if profile.kind == ProfileKind::Memory {
        let total = profile.total() as f64 / (1u64 << 20) as f64;
        return format!("{total:.1} MiB of {} over {secs:.1} s", profile.kind.describe());
    }
    if profile.kind != ProfileKind::Cpu {
        let total = profile.total() as f64 / 1e9;
        return format!("{total:.1} s of {} over {secs:.1} s, summed over threads", profile.kind.describe());
    }
    match 1_000_000_000u64.checked_div(profile.period) {
        Some(hz) => format!("{samples} samples in {secs:.1} s at {hz} Hz"),
        None => format!("{samples} samples in {secs:.1} s"),
    }
}

/// A colour family per frame kind, the shade picked from the name so a function keeps its colour across runs.
fn color(kind: FrameKind, name: &str) -> Color {
    let [v1, v2, v3] = shades(name);
    let ch = |base: u8, range: f32, v: f32| base.saturating_add((range * v) as u8);
    let (r, g, b) = match kind {
        // Flame graph "hot" (red to yellow), as in every perf flame graph.
        FrameKind::Native => (ch(205, 50.0, v3), ch(0, 230.0, v1), ch(0, 55.0, v2)),
        FrameKind::Python => (ch(50, 60.0, v1), ch(180, 55.0, v1), ch(80, 60.0, v2)),
        FrameKind::Kernel => (ch(190, 65.0, v1), ch(90, 65.0, v1), 0),
        FrameKind::Truncated => (170, 170, 170),
        FrameKind::Context => (ch(130, 40.0, v1), ch(140, 40.0, v1), ch(215, 40.0, v2)),
    };
    Color { r, g, b }
}

/// Three numbers in [0, 1) from an FNV-1a hash of `name` (stable across runs and machines).
fn shades(name: &str) -> [f32; 3] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    [0, 21, 42].map(|shift| ((hash >> shift) & 0x1f_ffff) as f32 / (1u64 << 21) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::folded::tests::sample_profile;

    fn svg(profile: &Profile) -> String {
        let mut out = Vec::new();
        write_svg(profile, "uvicorn CPU", &mut out).expect("svg");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn svg_shows_functions_title_and_counts() {
        let svg = svg(&sample_profile());
        assert!(svg.starts_with("<?xml"));
        for text in
            ["uvicorn CPU", "10 samples in 2.5 s at 100 Hz", "handler (app.py)", "leaf,weird name", "MainThread (7)"]
        {
            assert!(svg.contains(text), "{text:?} missing from the SVG");
        }
        // The kernel annotation picks the colour but is not shown.
        assert!(svg.contains("do_syscall_64 (1 samples"));
        assert!(!svg.contains("_[k]"));
    }

    #[test]
    fn frames_are_coloured_by_kind() {
        let svg = svg(&sample_profile());
        let fill = |name: &str| {
            let at = svg.find(&format!("<title>{name} (")).unwrap_or_else(|| panic!("{name} missing"));
            let rest = &svg[at..];
            let fill = &rest[rest.find("fill=\"rgb(").expect("fill") + 10..];
            let rgb: Vec<u8> = fill[..fill.find(')').expect(")")].split(',').map(|c| c.parse().expect("u8")).collect();
            rgb
        };
        let native = fill("main");
        assert!(native[0] >= 205, "native frames are warm: {native:?}");
        let python = fill("handler (app.py)");
        assert!(python[1] > python[0] && python[1] > python[2], "python frames are green: {python:?}");
        assert_eq!(fill("[truncated]"), [170, 170, 170]);
    }

    #[test]
    fn an_empty_profile_is_an_error_not_a_blank_svg() {
        let err = write_svg(&Profile::default(), "t", Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("no samples"));
    }
}
