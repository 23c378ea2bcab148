//! asyncio's pending tasks in a report (`profiler dump`'s, a crash report's): which task awaits which, and the
//! coroutines each is suspended in, as JSON and as a tree like `python -m asyncio pstree`. The tasks are read by
//! `python::asyncio_tasks` and turned into this by the pipeline (`Pipeline::asyncio_tasks`).
use std::fmt::Write as _;

use serde::Serialize;

use super::report::ReportFrame;

/// Levels of the task tree printed; deeper tasks are still in the JSON.
const MAX_TREE_DEPTH: usize = 32;

/// A process's tasks as a report shows them: read, or why not.
#[derive(Clone, Debug, Default)]
pub(crate) struct AsyncioSection {
    pub tasks: Option<AsyncioDump>,
    /// Why the tasks of a process that imported asyncio were not read, if they were not.
    pub note: Option<String>,
}

/// asyncio's pending tasks: which task awaits which, and the coroutines each is suspended in.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct AsyncioDump {
    pub pending: usize,
    /// Some tasks were left out (too many, or the read budget ran out): the list is not whole.
    pub truncated: bool,
    pub tasks: Vec<TaskDump>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct TaskDump {
    /// The task object's address, which `awaits` and `awaited_by` refer to.
    pub id: String,
    /// `Task.get_name()`.
    pub name: String,
    /// `running` (the event loop is stepping it), `waiting` (on a future or task) or `ready` (to be stepped).
    pub state: &'static str,
    /// For people: "task request-1", "gather of g1, g2", "a _asyncio.Future".
    pub waits_on: String,
    /// The tasks it awaits (directly, or through a `gather`), by `id`.
    pub awaits: Vec<String>,
    /// The pending tasks awaiting it, by `id`.
    pub awaited_by: Vec<String>,
    /// The coroutines it is suspended in, innermost first.
    pub coroutines: Vec<ReportFrame>,
    /// Why the coroutine chain ends early, if it does.
    pub chain_cut: Option<String>,
}

pub(crate) fn task_id(address: u64) -> String {
    format!("{address:#x}")
}

impl AsyncioDump {
    /// The tree, like `python -m asyncio pstree`: tasks no pending task awaits first, each followed by the tasks
    /// it awaits, indented.
    pub(crate) fn write_text(&self, text: &mut String) {
        let more = if self.truncated { ", more left out" } else { "" };
        let _ = writeln!(text, "\nasyncio tasks ({} pending{more}):", self.pending);
        let mut printed = vec![false; self.tasks.len()];
        let mut roots: Vec<usize> = (0..self.tasks.len()).filter(|&i| self.tasks[i].awaited_by.is_empty()).collect();
        // By name, so that two dumps of the same tree read alike (the registries' order is their hash tables').
        roots.sort_by(|&a, &b| self.tasks[a].name.cmp(&self.tasks[b].name));
        for root in roots {
            self.write_task(text, root, 0, &mut printed);
        }
        // Tasks only awaited from a cycle.
        for index in 0..self.tasks.len() {
            if !printed[index] {
                self.write_task(text, index, 0, &mut printed);
            }
        }
    }

    fn write_task(&self, text: &mut String, index: usize, depth: usize, printed: &mut [bool]) {
        let Some(task) = self.tasks.get(index) else { return };
        let indent = "    ".repeat(depth.saturating_add(1));
        let branch = if depth == 0 { "" } else { "└─ " };
        if printed[index] {
            let _ = writeln!(text, "{indent}{branch}task {} (shown above)", task.name);
            return;
        }
        printed[index] = true;
        let waits = match task.state {
            "running" => "running".to_owned(),
            "ready" => "ready to run".to_owned(),
            _ => format!("awaits {}", task.waits_on),
        };
        let _ = writeln!(text, "{indent}{branch}task {} ({}): {waits}", task.name, task.id);
        for frame in &task.coroutines {
            let location = match (&frame.file, frame.line) {
                (Some(file), Some(line)) => format!(" at {file}:{line}"),
                (Some(file), None) => format!(" at {file}"),
                _ => String::new(),
            };
            let _ = writeln!(text, "{indent}      {}{location}", frame.function);
        }
        if let Some(cut) = &task.chain_cut {
            let _ = writeln!(text, "{indent}      (the coroutine chain stops here: {cut})");
        }
        if depth >= MAX_TREE_DEPTH {
            return;
        }
        for awaited in &task.awaits {
            if let Some(child) = self.tasks.iter().position(|t| &t.id == awaited) {
                self.write_task(text, child, depth.saturating_add(1), printed);
            }
        }
    }
}
