//! The memory timeline of a crash report as a small SVG chart (`crash-….memory.svg` next to the report): the
//! resident set, its anonymous and file parts, and the thread count over the minute before the crash.
//!
//! Drawn by hand: four polylines, two axes and a legend are a few dozen lines of SVG, where a plotting crate would
//! bring a font stack and a rasterizer for nothing a browser does not already do.
use std::fmt::Write as _;

use crate::timeline::MemoryPoint;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// The chart, or `None` with fewer than two points (nothing to draw a line through).
pub(crate) fn render(points: &[MemoryPoint], title: &str) -> Option<String> {
    if points.len() < 2 {
        return None;
    }
    let oldest = points.iter().map(|p| p.seconds_before).fold(0.0, f64::max).max(1.0);
    let top_mib = nice_ceiling(points.iter().map(rss).fold(0.0, f64::max));
    let top_threads = nice_ceiling(points.iter().map(|p| p.threads as f64).fold(0.0, f64::max));
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |p: &MemoryPoint| LEFT + plot_w * (1.0 - p.seconds_before / oldest);
    let y = |value: f64, top: f64| TOP + plot_h * (1.0 - value / top);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="#fff"/>
<text x="{}" y="18" font-size="13" text-anchor="middle">{}</text>
<g stroke="#888" fill="none"><path d="M{LEFT},{TOP}V{}H{}V{TOP}"/></g>
"##,
        WIDTH / 2.0,
        escape(title),
        TOP + plot_h,
        LEFT + plot_w
    );
    // Axes: MiB on the left, threads on the right, seconds before the crash along the bottom.
    for step in 0..=4 {
        let fraction = f64::from(step) / 4.0;
        let at = TOP + plot_h * (1.0 - fraction);
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="end">{} MiB</text><text x="{}" y="{}" fill="#666">{}</text>"##,
            LEFT - 6.0,
            at + 4.0,
            tick(top_mib * fraction),
            LEFT + plot_w + 6.0,
            at + 4.0,
            tick(top_threads * fraction)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{}">{oldest:.0} s before</text><text x="{}" y="{}" text-anchor="end">the crash</text>"##,
        TOP + plot_h + 16.0,
        LEFT + plot_w,
        TOP + plot_h + 16.0
    );
    let series: [Series; 4] = [
        ("RSS", "#b22222", "", rss, top_mib),
        ("anonymous", "#e69500", "", |p| mib(p.rss_anon_kib), top_mib),
        ("file", "#1f77b4", "", |p| mib(p.rss_file_kib), top_mib),
        ("threads (right axis)", "#555", r#" stroke-dasharray="4 3""#, |p| p.threads as f64, top_threads),
    ];
    for (index, (name, color, dash, value, top)) in series.iter().enumerate() {
        let line: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", x(p), y(value(p), *top))).collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{}"><title>{name}</title></polyline>"#,
            line.join(" ")
        );
        let legend_x = LEFT + 140.0 * index as f64;
        let legend_y = HEIGHT - 12.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{legend_y}">{name}</text>"#,
            legend_y - 4.0,
            legend_x + 18.0,
            legend_y - 4.0,
            legend_x + 22.0
        );
    }
    svg.push_str("</svg>\n");
    Some(svg)
}

/// A line of the chart: name, colour, extra stroke attributes, the value of a point, the top of its axis.
type Series = (&'static str, &'static str, &'static str, fn(&MemoryPoint) -> f64, f64);

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn rss(point: &MemoryPoint) -> f64 {
    mib(point.rss_anon_kib + point.rss_file_kib + point.rss_shmem_kib)
}

/// The smallest of 1, 2 or 5 times a power of ten at or above `value` (at least 1): axis tops that read well.
fn nice_ceiling(value: f64) -> f64 {
    let mut step = 1.0;
    loop {
        for multiple in [1.0, 2.0, 5.0] {
            if step * multiple >= value {
                return step * multiple;
            }
        }
        step *= 10.0;
    }
}

/// An axis label: whole numbers as such, others with one decimal (a quarter of 10 threads is 2.5).
fn tick(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(seconds_before: f64, anon_mib: u64, threads: u64) -> MemoryPoint {
        MemoryPoint {
            seconds_before,
            rss_anon_kib: anon_mib * 1024,
            rss_file_kib: 10 * 1024,
            rss_shmem_kib: 0,
            threads,
        }
    }

    #[test]
    fn draws_each_series_through_every_point_within_the_plot() {
        let points: Vec<MemoryPoint> = (0..=60).rev().map(|s| point(s as f64, 100 + 5 * (60 - s), 4)).collect();
        let svg = render(&points, "SIGSEGV <python3> (42)").unwrap();
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("SIGSEGV &lt;python3&gt; (42)"), "the title is escaped");
        assert!(svg.contains(">500 MiB<"), "the axis tops out at a round number above 410 MiB: {svg}");
        for polyline in svg.split("points=\"").skip(1) {
            let coordinates = polyline.split('"').next().unwrap();
            assert_eq!(coordinates.split(' ').count(), points.len());
            for pair in coordinates.split(' ') {
                let (x, y) = pair.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT..=WIDTH - RIGHT).contains(&x) && (TOP..=HEIGHT - BOTTOM).contains(&y), "{x},{y}");
            }
        }
    }

    #[test]
    fn needs_two_points() {
        assert!(render(&[point(0.0, 1, 1)], "x").is_none());
        assert_eq!(
            (nice_ceiling(0.0), nice_ceiling(3.0), nice_ceiling(410.0), nice_ceiling(1000.0)),
            (1.0, 5.0, 500.0, 1000.0)
        );
    }
}
