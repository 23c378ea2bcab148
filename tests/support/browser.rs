//! Headless Chromium driven through the Chrome DevTools Protocol (the `headless_chrome` crate), for the tests that
//! check what a person sees in a page the profiler writes. The flame graph SVG is such a page: inferno embeds a
//! script in it for search and zoom, and only a browser runs that script.
//!
//! Input goes in as a person's would: mouse events at a point of the window, an answer typed into a `prompt()`
//! dialog, a file chosen in the file chooser that a click opens. What the page shows is read back with small
//! scripts that return JSON. The browser is Debian's (`cargo xtask setup` installs the `chromium` package);
//! nothing is downloaded.
use std::{
    path::Path,
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use headless_chrome::{
    browser::tab::point::Point,
    protocol::cdp::{types::Event, Page::CaptureScreenshotFormatOption, DOM},
    Browser, LaunchOptions, Tab,
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a page has to answer: to load, to open a dialog after a click, to reach a state [`Page::wait_for`]
/// waits for.
const PAGE_LIMIT: Duration = Duration::from_secs(20);

/// True when Chromium is installed. Otherwise it says why and returns false so the test can return early, except
/// under `CI=true`, where a skipped test would hide a broken setup, so it fails instead.
pub fn require_chromium() -> bool {
    if Path::new(CHROMIUM).is_file() {
        return true;
    }
    let test = thread::current().name().unwrap_or("this test").to_owned();
    let why = format!("{test} needs Chromium at {CHROMIUM}: run `cargo xtask setup` (Debian package `chromium`)");
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{why}, and CI=true does not allow skipping it");
    }
    eprintln!("skipping {why}");
    false
}

/// One page in its own headless Chromium, which ends with it.
pub struct Page {
    tab: Arc<Tab>,
    // Dropped after the tab: dropping the browser ends the Chromium process.
    _browser: Browser,
}

impl Page {
    /// Starts Chromium with a window of `width` × `height` CSS pixels and opens `file` in it, as a person who
    /// opens the file from disk does (a `file://` URL). Returns once the page has loaded.
    pub fn open(file: &Path, width: u32, height: u32) -> Page {
        let file = std::fs::canonicalize(file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        let options = LaunchOptions::default_builder()
            .path(Some(CHROMIUM.into()))
            .headless(true)
            // The tests run as root, and Chromium refuses to run as root inside its sandbox.
            .sandbox(false)
            .window_size(Some((width, height)))
            // Nothing to reach: the page is a local file and this machine's network is closed. Without this,
            // Chromium keeps trying to update its components.
            .args(vec!["--disable-component-update".as_ref(), "--hide-scrollbars".as_ref()])
            // The default (30 s) would drop the connection to a browser kept waiting by a slow test machine.
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .expect("Chromium's launch options");
        let browser = Browser::new(options).unwrap_or_else(|err| panic!("starting {CHROMIUM} failed: {err:#}"));
        let tab = browser.new_tab().unwrap_or_else(|err| panic!("opening a tab in Chromium failed: {err:#}"));
        tab.set_default_timeout(PAGE_LIMIT);
        let url = format!("file://{}", file.display());
        tab.navigate_to(&url)
            .and_then(|tab| tab.wait_until_navigated())
            .unwrap_or_else(|err| panic!("Chromium did not load {url}: {err:#}"));
        Page { tab, _browser: browser }
    }

    /// The value of the JavaScript `expression`, which must be one that `JSON.stringify` can write, read as a `T`.
    /// A script error fails the test with the error.
    pub fn eval<T: DeserializeOwned>(&self, expression: &str) -> T {
        let wrapped = format!("JSON.stringify((() => {{ return {expression}; }})())");
        let result = self
            .tab
            .evaluate(&wrapped, false)
            .unwrap_or_else(|err| panic!("evaluating `{expression}` failed: {err:#}"));
        match result.value {
            Some(Value::String(json)) => serde_json::from_str(&json)
                .unwrap_or_else(|err| panic!("`{expression}` gave JSON that is not what was expected ({err}): {json}")),
            _ => panic!(
                "`{expression}` failed in the page: {}",
                result.description.unwrap_or_else(|| format!("{:?}", result.value))
            ),
        }
    }

    /// Waits until `expression` is true in the page; fails the test, showing `what`, after [`PAGE_LIMIT`].
    pub fn wait_for(&self, expression: &str, what: &str) {
        self.wait_until(what, || self.eval::<bool>(expression));
    }

    /// Waits until `done` returns true, asking it every 20 ms; fails the test after [`PAGE_LIMIT`], showing `what`
    /// and the start of the page's text.
    pub fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            if started.elapsed() >= PAGE_LIMIT {
                let shown: String = self.eval("document.body ? document.body.innerText.slice(0, 600) : ''");
                panic!("the page did not reach this within {PAGE_LIMIT:?}: {what}; it shows {shown:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A click at `(x, y)` that must open a file chooser (a file input's, or its label's: a "Browse" button), in
    /// which `file` is chosen, as a person chooses it: the input gets the file and fires its `change` event.
    /// Chromium is asked to hand the chooser to the test instead of showing one
    /// (`Page.setInterceptFileChooserDialog`), and the file is set on the input the chooser was opened for
    /// (`DOM.setFileInputFiles`).
    pub fn click_and_choose_file(&self, (x, y): (f64, f64), file: &Path) {
        let file = std::fs::canonicalize(file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        let path = file.to_str().unwrap_or_else(|| panic!("{} is not UTF-8", file.display())).to_owned();
        let (opened, choosers) = mpsc::channel();
        let listener = self
            .tab
            .add_event_listener(Arc::new(move |event: &Event| {
                if let Event::PageFileChooserOpened(chooser) = event {
                    let _ = opened.send(chooser.params.clone());
                }
            }))
            .expect("listening for file choosers");
        let intercepted = self.tab.set_file_chooser_dialog_interception(true, None);
        intercepted.unwrap_or_else(|err| panic!("asking Chromium for its file choosers failed: {err:#}"));
        self.click((x, y));
        let chooser = choosers.recv_timeout(PAGE_LIMIT);
        let _ = self.tab.remove_event_listener(&listener);
        let chooser = chooser
            .unwrap_or_else(|_| panic!("no file chooser opened within {PAGE_LIMIT:?} of the click at ({x}, {y})"));
        let input = chooser
            .backend_node_id
            .unwrap_or_else(|| panic!("the file chooser the click at ({x}, {y}) opened is for no input: {chooser:?}"));
        let chosen = self.tab.call_method(DOM::SetFileInputFiles {
            files: vec![path.clone()],
            node_id: None,
            backend_node_id: Some(input),
            object_id: None,
        });
        chosen.unwrap_or_else(|err| panic!("choosing {path} in the file chooser failed: {err:#}"));
        let _ = self.tab.set_file_chooser_dialog_interception(false, None);
    }

    /// Starts noting the dialogs the page opens (`alert()`, `confirm()`, `prompt()`), and dismisses each so that
    /// the page goes on, until the returned watch is dropped. For a page that reports failures in dialogs: a test
    /// asks [`DialogWatch::opened`] while it waits. Not to be held across [`Page::click_and_answer_prompt`], whose
    /// prompt it would dismiss.
    pub fn watch_dialogs(&self) -> DialogWatch {
        let opened = Arc::new(Mutex::new(Vec::new()));
        // Weak: the tab keeps the listener, which must not keep the tab.
        let tab = Arc::downgrade(&self.tab);
        let listener = self
            .tab
            .add_event_listener(Arc::new({
                let opened = Arc::clone(&opened);
                move |event: &Event| {
                    if let Event::PageJavascriptDialogOpening(dialog) = event {
                        let seen = format!("a dialog ({:?}) saying {:?}", dialog.params.Type, dialog.params.message);
                        opened.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(seen);
                        // Not on the thread that delivers events, which the answer to this call comes back on.
                        let tab = tab.clone();
                        thread::spawn(move || {
                            if let Some(tab) = tab.upgrade() {
                                let _ = tab.get_dialog().dismiss();
                            }
                        });
                    }
                }
            }))
            .expect("listening for dialogs");
        DialogWatch { tab: Arc::clone(&self.tab), listener, opened }
    }

    /// A left click at `(x, y)`, in CSS pixels from the top left corner of the window: the mouse moves there, is
    /// pressed and released, and the page gets the events a real mouse gives.
    pub fn click(&self, (x, y): (f64, f64)) {
        self.tab.click_point(Point { x, y }).unwrap_or_else(|err| panic!("clicking at ({x}, {y}) failed: {err:#}"));
    }

    /// A click at `(x, y)` that must open a `prompt()` dialog, which is answered with `answer` and OK. Returns the
    /// dialog's message.
    pub fn click_and_answer_prompt(&self, at: (f64, f64), answer: &str) -> String {
        let (opened, dialogs) = mpsc::channel();
        let listener = self
            .tab
            .add_event_listener(Arc::new(move |event: &Event| {
                if let Event::PageJavascriptDialogOpening(dialog) = event {
                    let _ = opened.send((dialog.params.Type.clone(), dialog.params.message.clone()));
                }
            }))
            .expect("listening for dialogs");
        // Chromium answers the mouse events only once the script they start has finished, and the script waits in
        // `prompt()` for the answer: the click goes on in a thread of its own while the answer is given here.
        let clicking = thread::spawn({
            let tab = Arc::clone(&self.tab);
            move || tab.click_point(Point { x: at.0, y: at.1 }).map(|_| ()).map_err(|err| format!("{err:#}"))
        });
        let dialog = dialogs.recv_timeout(PAGE_LIMIT);
        let _ = self.tab.remove_event_listener(&listener);
        let (kind, message) = match dialog {
            Ok(dialog) => dialog,
            Err(_) => {
                let clicked = clicking.join().expect("the clicking thread");
                panic!("no dialog opened within {PAGE_LIMIT:?} of the click at {at:?} (the click: {clicked:?})");
            }
        };
        let shown = format!("a {kind:?} dialog saying {message:?}");
        let answered = self.tab.get_dialog().accept(Some(answer.to_owned()));
        answered.unwrap_or_else(|err| panic!("answering {shown} failed: {err:#}"));
        let clicked = clicking.join().expect("the clicking thread");
        clicked.unwrap_or_else(|err| panic!("the click at {at:?} that opened {shown} failed: {err}"));
        assert_eq!(
            kind,
            headless_chrome::protocol::cdp::Page::DialogType::Prompt,
            "the click opened {shown}, not a prompt"
        );
        message
    }

    /// Saves what the window shows as a PNG, for a person to look at when a test fails.
    pub fn screenshot(&self, png: &Path) {
        let data = self
            .tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .unwrap_or_else(|err| panic!("taking a screenshot failed: {err:#}"));
        std::fs::write(png, data).unwrap_or_else(|err| panic!("writing {}: {err}", png.display()));
    }
}

/// The dialogs a page opened while watched: see [`Page::watch_dialogs`].
pub struct DialogWatch {
    tab: Arc<Tab>,
    listener: std::sync::Weak<dyn headless_chrome::browser::tab::EventListener<Event> + Send + Sync>,
    opened: Arc<Mutex<Vec<String>>>,
}

impl DialogWatch {
    /// Each dialog opened so far, as `a dialog (Alert) saying "..."`.
    pub fn opened(&self) -> Vec<String> {
        self.opened.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Drop for DialogWatch {
    fn drop(&mut self) {
        let _ = self.tab.remove_event_listener(&self.listener);
    }
}

/// Where something is drawn on a page, in CSS pixels from the window's top left corner, as a page's script reports
/// it (`getBoundingClientRect`).
#[derive(Debug, Deserialize, Clone, Copy)]
pub struct Bounds {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

impl Bounds {
    /// The point a click on it aims at.
    pub fn center(&self) -> (f64, f64) {
        (self.left + self.width / 2.0, self.top + self.height / 2.0)
    }
}
