//! The flame graph as a person uses it: opened from disk in a browser (headless Chromium), a function searched
//! with the Search button, a frame clicked to zoom into it, and the zoom reset.
//!
//! The SVG is a program as much as a picture: inferno embeds the script that searches and zooms, and a test that
//! reads the SVG as text (native.rs) cannot tell whether that script runs in a browser, finds our frames by their
//! names, or shows the right shares. The recording is native-burn's, whose functions and call chains are known by
//! construction (examples/native-burn/main.c); what the page shows is checked against the folded stacks the same
//! recording wrote. Screenshots of each step are left in the test's directory, kept when the test fails.
use std::{collections::BTreeSet, time::Duration};

use profiler_tests::{
    browser::{require_chromium, Bounds, Page},
    exclusive_cpu, profiler, require_root, run, start_native_burn, Folded, TestDir,
};
use serde::Deserialize;

/// The window, in CSS pixels: wide enough that the frames are easy to hit, tall enough to show the whole graph.
const WINDOW: (u32, u32) = (1280, 800);

/// The function searched for: the main thread's hotter leaf, at one place in the graph.
const SEARCHED: &str = "hot_main_a";
/// The frame clicked to zoom into: the main thread's loop body, called by run_main_loop.
const ZOOMED: &str = "level_1";
/// What native-burn calls under level_1, by construction.
const ZOOMED_CALLEES: [&str; 4] = ["level_2", "level_3", "hot_main_a", "hot_main_b"];
/// Frames of the other two threads, none of which is under level_1, by construction.
const OTHER_THREADS: [&str; 6] = ["burn-a", "thread_a_entry", "lib_hot_x", "burn-b", "thread_b_entry", "hot_b"];

/// "Matched: N%" is shown with one decimal, and frames narrower than 0.01% of the samples are left out of the SVG.
const MATCHED_TOLERANCE_PP: f64 = 0.1;
/// Boxes are placed from percentages with four decimals: a pixel is a wide margin.
const PIXEL_TOLERANCE: f64 = 1.0;

/// The script that reads what the page shows, as a [`View`].
const READ_VIEW: &str = r#"(() => {
    const bounds = element => {
        const b = element.getBoundingClientRect();
        return { left: b.left, top: b.top, width: b.width, height: b.height };
    };
    const control = id => {
        const element = document.getElementById(id);
        return { text: element.textContent, display: getComputedStyle(element).display, bounds: bounds(element) };
    };
    return {
        frames: Array.from(document.getElementById("frames").children).map(group => {
            const rect = group.querySelector("rect");
            return {
                title: group.querySelector("title").textContent,
                label: group.querySelector("text").textContent,
                fill: getComputedStyle(rect).fill,
                class: group.getAttribute("class") || "",
                display: getComputedStyle(group).display,
                opacity: getComputedStyle(group).opacity,
                bounds: bounds(rect),
            };
        }),
        area: bounds(document.getElementById("frames")),
        window_height: window.innerHeight,
        search: control("search"),
        matched: control("matched"),
        unzoom: control("unzoom"),
        query: location.search,
    };
})()"#;

/// What the page shows at one moment.
#[derive(Debug, Deserialize)]
struct View {
    /// Every frame of the graph, in the SVG's order (which the script never changes).
    frames: Vec<Frame>,
    /// Where the frames are drawn: a frame of all the samples spans it.
    area: Bounds,
    window_height: f64,
    /// The button that says "Search", or "Reset Search" while a search is shown.
    search: Control,
    /// "Matched: N%" while a search is shown.
    matched: Control,
    /// The button that says "Reset Zoom", shown while zoomed.
    unzoom: Control,
    /// The URL's query, where the script keeps a search and a zoom for a link to share.
    query: String,
}

/// One frame: a box with a label, and a tooltip (the title) that names it.
#[derive(Debug, Deserialize)]
struct Frame {
    /// `NAME (N samples, P%)`.
    title: String,
    /// The text in the box: the name, shortened with `..` or left out when the box is too narrow for it.
    label: String,
    /// The box's colour as drawn (computed style).
    fill: String,
    /// The script's marks: `parent` on the frames below a zoomed one, `hide` on those outside it.
    class: String,
    /// Computed CSS `display`: `none` when hidden.
    display: String,
    /// Computed CSS `opacity`: the frames below a zoomed one are drawn faded.
    opacity: String,
    bounds: Bounds,
}

/// A control of the page: a text that acts as a button, or shows a result.
#[derive(Debug, Deserialize)]
struct Control {
    text: String,
    display: String,
    bounds: Bounds,
}

impl Frame {
    /// The function (or process, or thread) the frame stands for: its title without the counts.
    fn name(&self) -> &str {
        self.title.rsplit_once(" (").map_or(&self.title, |(name, _)| name)
    }

    /// The samples its title counts.
    fn samples(&self) -> u64 {
        let counts = self.title.rsplit_once(" (").map(|(_, counts)| counts);
        let samples = counts.and_then(|counts| counts.split_once(" samples")).map(|(n, _)| n.replace(',', ""));
        samples
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a frame title without `(N samples, ...)`: {:?}", self.title))
    }

    fn shown(&self) -> bool {
        self.display != "none" && self.bounds.width > 0.0
    }

    fn is_parent(&self) -> bool {
        self.class.split_whitespace().any(|class| class == "parent")
    }

    /// Whether it spans the whole drawing area, as a frame of all the shown samples does.
    fn spans(&self, area: &Bounds) -> bool {
        (self.bounds.left - area.left).abs() <= PIXEL_TOLERANCE
            && (self.bounds.width - area.width).abs() <= PIXEL_TOLERANCE
    }

    /// For failure messages.
    fn describe(&self) -> String {
        format!(
            "{:?} (class {:?}, display {}, fill {}, at x {:.1} width {:.1})",
            self.title, self.class, self.display, self.fill, self.bounds.left, self.bounds.width
        )
    }
}

impl View {
    fn read(page: &Page) -> View {
        page.eval(READ_VIEW)
    }

    /// The frames named `name`, with their places in [`View::frames`].
    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (usize, &'a Frame)> + 'a {
        self.frames.iter().enumerate().filter(move |(_, frame)| frame.name() == name)
    }

    /// The frame of all the samples, which inferno puts at the bottom.
    fn root(&self) -> &Frame {
        self.named("all").map(|(_, frame)| frame).next().expect("the flame graph has no `all` frame")
    }
}

#[test]
fn flame_graph_search_and_zoom_in_chromium() {
    if !require_root() || !require_chromium() {
        return;
    }
    // Held while Chromium runs too: it would take CPU from the workloads of the tests that measure shares.
    let _cpu = exclusive_cpu();
    let dir = TestDir::new("browser-flame-graph");
    let folded = record_native_burn(&dir, "flame.svg");

    let page = Page::open(&dir.join("flame.svg"), WINDOW.0, WINDOW.1);
    // Once loaded, the script lays the graph out for the window's width (inferno's "fluid drawing").
    page.wait_for(
        "Math.abs(document.getElementById('frames').getBoundingClientRect().width - (window.innerWidth - 2 * xpad)) < 1",
        "the frames laid out across the window's width",
    );
    page.screenshot(&dir.join("1-opened.png"));
    let opened = View::read(&page);
    check_opened(&opened, &folded);
    search_shows_the_function_and_its_share(&page, &dir, &opened, &folded);
    zoom_shows_the_frame_and_its_callees_only(&page, &dir, &opened, &folded);
}

/// Records native-burn for 5 s into `dir`/`output` (a flame graph, a pprof: the format follows the name) and
/// `dir`/stacks.folded, and reads the folded stacks. Also for speedscope.rs.
pub(crate) fn record_native_burn(dir: &TestDir, output: &str) -> Folded {
    let workload = start_native_burn(Duration::from_secs(120));
    let mut record = profiler();
    record.args(["record", "--pid", &workload.pid().to_string(), "--duration", "5s"]);
    record.arg("-o").arg(dir.join(output)).arg("-o").arg(dir.join("stacks.folded"));
    let run = run(&mut record, Duration::from_secs(120));
    drop(workload);
    run.assert_success();
    Folded::read(&dir.join("stacks.folded"))
}

/// As opened: every frame shown at its share of the window's width, nothing searched or zoomed.
fn check_opened(opened: &View, folded: &Folded) {
    let total = folded.total();
    let root = opened.root();
    assert_eq!(root.samples(), total, "the `all` frame and the folded file count different samples");
    assert!(
        root.spans(&opened.area),
        "the `all` frame does not span the graph ({:?}): {}",
        opened.area,
        root.describe()
    );
    let hidden: Vec<String> =
        opened.frames.iter().filter(|f| !f.shown() || !f.class.is_empty()).map(Frame::describe).collect();
    assert!(hidden.is_empty(), "frames hidden or marked before any click:\n{}", hidden.join("\n"));
    let below_window: Vec<String> = opened
        .frames
        .iter()
        .filter(|f| f.bounds.top + f.bounds.height > opened.window_height)
        .map(Frame::describe)
        .collect();
    assert!(below_window.is_empty(), "frames below the window's bottom edge:\n{}", below_window.join("\n"));
    for (_, frame) in opened.named(ZOOMED) {
        let expected = frame.samples() as f64 / total as f64 * opened.area.width;
        assert!(
            (frame.bounds.width - expected).abs() <= PIXEL_TOLERANCE,
            "{ZOOMED} is drawn {:.1} px wide, {expected:.1} px for its share of the samples: {}",
            frame.bounds.width,
            frame.describe()
        );
    }
    assert_eq!(opened.search.text, "Search", "the search button: {:?}", opened.search);
    assert_eq!(opened.unzoom.display, "none", "Reset Zoom is shown before any zoom: {:?}", opened.unzoom);
    assert_eq!(opened.matched.text.trim(), "", "a match is shown before any search: {:?}", opened.matched);
}

/// Clicks Search, types [`SEARCHED`] into the prompt, and checks the highlighted frames and the share shown; then
/// clicks Reset Search.
fn search_shows_the_function_and_its_share(page: &Page, dir: &TestDir, opened: &View, folded: &Folded) {
    let message = page.click_and_answer_prompt(opened.search.bounds.center(), SEARCHED);
    assert!(message.contains("search term"), "the Search button asked {message:?}");
    page.screenshot(&dir.join("2-searched.png"));
    let searched = View::read(page);

    // The share shown: of all samples, those with the function on the stack.
    let with_function = folded
        .stacks
        .iter()
        .filter(|(frames, _)| frames.iter().any(|frame| frame.contains(SEARCHED)))
        .map(|(_, count)| count)
        .sum::<u64>();
    let expected = 100.0 * with_function as f64 / folded.total() as f64;
    assert_ne!(searched.matched.display, "none", "Matched is not shown: {:?}", searched.matched);
    let shown: f64 = searched
        .matched
        .text
        .strip_prefix("Matched: ")
        .and_then(|rest| rest.strip_suffix('%'))
        .and_then(|percent| percent.parse().ok())
        .unwrap_or_else(|| {
            panic!("after searching {SEARCHED:?} the page shows {:?}, not `Matched: N%`", searched.matched)
        });
    assert!(
        (shown - expected).abs() <= MATCHED_TOLERANCE_PP,
        "searching {SEARCHED:?} shows Matched: {shown}%; the folded stacks have it in {with_function} of {} \
         samples ({expected:.2}%)",
        folded.total()
    );
    assert_eq!(searched.search.text, "Reset Search", "the search button after a search: {:?}", searched.search);
    assert_eq!(searched.query, format!("?s={SEARCHED}"), "the URL does not keep the search");

    // Highlighted: the frames of the function, in one colour no frame had; every other frame as it was.
    let highlights: BTreeSet<&str> = searched.named(SEARCHED).map(|(_, frame)| frame.fill.as_str()).collect();
    let highlight = match Vec::from_iter(highlights).as_slice() {
        [one] => one.to_string(),
        [] => panic!("no frame named {SEARCHED} in the flame graph"),
        several => panic!("the frames of {SEARCHED} are drawn in several colours after the search: {several:?}"),
    };
    let wrong: Vec<String> = opened
        .frames
        .iter()
        .zip(&searched.frames)
        .filter(|(before, after)| {
            if after.name() == SEARCHED {
                after.fill == before.fill || !after.shown()
            } else {
                after.fill != before.fill
            }
        })
        .map(|(before, after)| format!("{} (before: {})", after.describe(), before.fill))
        .collect();
    assert!(
        wrong.is_empty(),
        "after searching {SEARCHED:?}, these frames are not highlighted in {highlight} as they should be, or are \
         when they should not:\n{}",
        wrong.join("\n")
    );
    let already = opened.frames.iter().filter(|frame| frame.fill == highlight).map(Frame::describe).collect::<Vec<_>>();
    assert!(
        already.is_empty(),
        "the highlight {highlight} cannot be told from frames drawn in it:\n{}",
        already.join("\n")
    );

    // The same button resets the search.
    page.click(searched.search.bounds.center());
    page.screenshot(&dir.join("3-search-reset.png"));
    let reset = View::read(page);
    let still: Vec<String> = opened
        .frames
        .iter()
        .zip(&reset.frames)
        .filter(|(before, after)| after.fill != before.fill)
        .map(|(before, after)| format!("{} (before: {})", after.describe(), before.fill))
        .collect();
    assert!(still.is_empty(), "after Reset Search these frames keep another colour:\n{}", still.join("\n"));
    assert_eq!(reset.matched.display, "none", "Matched is still shown after Reset Search: {:?}", reset.matched);
    assert_eq!(reset.search.text, "Search", "the search button after Reset Search: {:?}", reset.search);
}

/// The stack below the widest [`ZOOMED`] frame (names from the thread's root side, with the process and thread),
/// its samples, and its callees with their samples, from the folded stacks.
struct ZoomedPath {
    below: Vec<String>,
    samples: u64,
    callees: Vec<(String, u64)>,
}

impl ZoomedPath {
    fn from_folded(folded: &Folded) -> ZoomedPath {
        let mut by_path: Vec<(&[String], u64)> = Vec::new();
        for (frames, count) in &folded.stacks {
            let Some(at) = frames.iter().position(|frame| frame == ZOOMED) else { continue };
            match by_path.iter_mut().find(|(below, _)| *below == &frames[..at]) {
                Some((_, samples)) => *samples += count,
                None => by_path.push((&frames[..at], *count)),
            }
        }
        let (below, samples) = by_path
            .into_iter()
            .max_by_key(|(_, samples)| *samples)
            .unwrap_or_else(|| panic!("no stack with {ZOOMED} in the folded file"));
        let mut callees: Vec<(String, u64)> = Vec::new();
        for (frames, count) in &folded.stacks {
            if frames.len() > below.len() + 1 && frames.starts_with(below) && frames[below.len()] == ZOOMED {
                for name in BTreeSet::from_iter(&frames[below.len() + 1..]) {
                    match callees.iter_mut().find(|(callee, _)| callee.as_str() == name.as_str()) {
                        Some((_, samples)) => *samples += count,
                        None => callees.push((name.clone(), *count)),
                    }
                }
            }
        }
        ZoomedPath { below: below.to_vec(), samples, callees }
    }
}

/// Clicks the widest [`ZOOMED`] frame and checks the zoomed view: it spans the graph, the frames below it are shown
/// faded as its parents, its callees are widened to their share of it, and everything else is hidden; then clicks
/// Reset Zoom and checks the graph is back as opened.
fn zoom_shows_the_frame_and_its_callees_only(page: &Page, dir: &TestDir, opened: &View, folded: &Folded) {
    let path = ZoomedPath::from_folded(folded);
    let (index, target) = opened
        .named(ZOOMED)
        .max_by_key(|(_, frame)| frame.samples())
        .unwrap_or_else(|| panic!("no frame named {ZOOMED} in the flame graph"));
    assert_eq!(
        target.samples(),
        path.samples,
        "the widest {ZOOMED} frame and the folded stacks through {} count different samples",
        path.below.join(";")
    );
    page.click(target.bounds.center());
    page.screenshot(&dir.join("4-zoomed.png"));
    let zoomed = View::read(page);
    let area = &zoomed.area;

    let clicked = &zoomed.frames[index];
    assert!(
        clicked.shown() && !clicked.is_parent() && clicked.spans(area),
        "the clicked {ZOOMED} frame does not span the graph ({area:?}): {}",
        clicked.describe()
    );
    // The script writes the title less its counts as the label, so with the space before them.
    assert_eq!(clicked.label.trim_end(), ZOOMED, "the label of the clicked frame: {}", clicked.describe());

    // Below it, from the bottom up: `all`, the process, the thread, and the thread's stack down to it.
    let mut parents: Vec<&Frame> = zoomed.frames.iter().filter(|frame| frame.is_parent()).collect();
    parents.sort_by(|a, b| b.bounds.top.total_cmp(&a.bounds.top));
    let parent_names: Vec<&str> = parents.iter().map(|frame| frame.name()).collect();
    let expected: Vec<&str> = std::iter::once("all").chain(path.below.iter().map(String::as_str)).collect();
    assert_eq!(parent_names, expected, "the frames shown as parents of the zoomed {ZOOMED}");
    for parent in &parents {
        assert!(
            parent.shown() && parent.spans(area) && parent.opacity == "0.5",
            "a parent of the zoomed {ZOOMED} is not drawn faded across the graph: {}",
            parent.describe()
        );
    }

    // Above it: only its callees, each as wide as its share of the zoomed frame's samples.
    let callee_names: BTreeSet<&str> = path.callees.iter().map(|(name, _)| name.as_str()).collect();
    let strangers: Vec<String> = zoomed
        .frames
        .iter()
        .enumerate()
        .filter(|(at, frame)| *at != index && frame.shown() && !frame.is_parent())
        .filter(|(_, frame)| !callee_names.contains(frame.name()))
        .map(|(_, frame)| frame.describe())
        .collect();
    assert!(
        strangers.is_empty(),
        "shown while zoomed into {ZOOMED}, though not called from it in the folded stacks:\n{}",
        strangers.join("\n")
    );
    for callee in ZOOMED_CALLEES {
        let samples = path.callees.iter().find(|(name, _)| name == callee).map_or(0, |(_, samples)| *samples);
        let expected = samples as f64 / path.samples as f64 * area.width;
        let drawn: f64 = zoomed.named(callee).filter(|(_, f)| f.shown()).map(|(_, f)| f.bounds.width).sum();
        assert!(
            samples > 0 && (drawn - expected).abs() <= PIXEL_TOLERANCE,
            "zoomed into {ZOOMED}, {callee} is drawn {drawn:.1} px wide; its {samples} of {ZOOMED}'s {} samples \
             make {expected:.1} px of {:.1}",
            path.samples,
            area.width
        );
    }
    let other_threads: Vec<String> = OTHER_THREADS
        .iter()
        .flat_map(|name| zoomed.named(name))
        .filter(|(_, frame)| frame.shown())
        .map(|(_, frame)| frame.describe())
        .collect();
    assert!(
        other_threads.is_empty(),
        "zoomed into {ZOOMED}, other threads' frames are shown:\n{}",
        other_threads.join("\n")
    );
    for name in OTHER_THREADS {
        assert!(zoomed.named(name).next().is_some(), "no frame named {name} in the flame graph");
    }
    assert!(
        zoomed.unzoom.display != "none" && zoomed.unzoom.text == "Reset Zoom",
        "Reset Zoom is not shown while zoomed: {:?}",
        zoomed.unzoom
    );

    // Reset Zoom: every frame back where it was, nothing hidden or faded.
    page.click(zoomed.unzoom.bounds.center());
    page.screenshot(&dir.join("5-zoom-reset.png"));
    let reset = View::read(page);
    let moved: Vec<String> = opened
        .frames
        .iter()
        .zip(&reset.frames)
        .filter(|(before, after)| {
            !after.shown()
                || !after.class.is_empty()
                || (after.bounds.left - before.bounds.left).abs() > PIXEL_TOLERANCE
                || (after.bounds.width - before.bounds.width).abs() > PIXEL_TOLERANCE
        })
        .map(|(before, after)| {
            format!("{} (as opened: x {:.1} width {:.1})", after.describe(), before.bounds.left, before.bounds.width)
        })
        .collect();
    assert!(moved.is_empty(), "after Reset Zoom these frames are not as they were:\n{}", moved.join("\n"));
    assert_eq!(reset.unzoom.display, "none", "Reset Zoom is still shown after a click on it: {:?}", reset.unzoom);
}
