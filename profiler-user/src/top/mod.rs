//! `profiler top`'s view: the statistics of the latest interval and since the start (`stats`), the screen drawn
//! from them (`view`), and what each key does (here). The command driver (commands/top.rs) feeds it one CPU
//! profile per refresh and the keys the terminal reports.
mod stats;
mod view;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

pub(crate) use self::{
    stats::{LiveStats, SortBy},
    view::{draw, Header, ViewState},
};

/// What a key asks of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyAction {
    Quit,
    /// The view changed: draw it again now rather than at the next refresh.
    Redraw,
    Ignore,
}

/// Rows one Page Up or Page Down moves the function table.
const PAGE_ROWS: usize = 10;

/// Applies `key` to the view and the statistics.
pub(crate) fn on_key(key: KeyEvent, view: &mut ViewState, stats: &mut LiveStats) -> KeyAction {
    if key.kind == KeyEventKind::Release {
        return KeyAction::Ignore;
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => return KeyAction::Quit,
        // Raw mode turns Ctrl-C into a key rather than SIGINT.
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return KeyAction::Quit,
        KeyCode::Char(digit @ '1'..='4') => view.sort = SortBy::from_key(digit).unwrap_or_default(),
        KeyCode::Char('p') | KeyCode::Char(' ') => view.paused = !view.paused,
        KeyCode::Char('r') => stats.reset(),
        // Per-line and per-function rows cannot be added together: the totals start again.
        KeyCode::Char('l') => {
            let by_line = !stats.by_line;
            stats.reset();
            stats.by_line = by_line;
        }
        KeyCode::Down => view.scroll += 1,
        KeyCode::Up => view.scroll = view.scroll.saturating_sub(1),
        KeyCode::PageDown => view.scroll += PAGE_ROWS,
        KeyCode::PageUp => view.scroll = view.scroll.saturating_sub(PAGE_ROWS),
        KeyCode::Home => view.scroll = 0,
        _ => return KeyAction::Ignore,
    }
    KeyAction::Redraw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, view: &mut ViewState, stats: &mut LiveStats) -> KeyAction {
        on_key(KeyEvent::new(code, KeyModifiers::NONE), view, stats)
    }

    #[test]
    fn keys_sort_pause_scroll_and_quit() {
        let (mut view, mut stats) = (ViewState::default(), LiveStats::default());
        assert_eq!(press(KeyCode::Char('3'), &mut view, &mut stats), KeyAction::Redraw);
        assert_eq!(view.sort, SortBy::OwnTime);
        press(KeyCode::Char('p'), &mut view, &mut stats);
        assert!(view.paused);
        press(KeyCode::Up, &mut view, &mut stats);
        assert_eq!(view.scroll, 0);
        press(KeyCode::PageDown, &mut view, &mut stats);
        press(KeyCode::Up, &mut view, &mut stats);
        assert_eq!(view.scroll, PAGE_ROWS - 1);
        press(KeyCode::Char('l'), &mut view, &mut stats);
        assert!(stats.by_line);
        assert_eq!(press(KeyCode::Char('x'), &mut view, &mut stats), KeyAction::Ignore);
        assert_eq!(press(KeyCode::Char('q'), &mut view, &mut stats), KeyAction::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(on_key(ctrl_c, &mut view, &mut stats), KeyAction::Quit);
    }
}
