//! asyncio's pending tasks of a process, read now and named like sampled frames, for `dump` and crash reports.
use super::Pipeline;
use crate::{
    crash::{
        asyncio::{task_id, AsyncioDump, AsyncioSection, TaskDump},
        report::ReportFrame,
    },
    python::asyncio_tasks::{self, AsyncioTasks, Outcome, Waiter},
};

impl Pipeline {
    /// The pending tasks of `pid` now, or why they cannot be read; nothing for a process that did not import
    /// asyncio or runs no Python we read.
    pub(crate) fn asyncio_tasks(&mut self, pid: u32) -> AsyncioSection {
        let Some(interpreter) = self.python_interpreter(pid) else { return AsyncioSection::default() };
        match asyncio_tasks::read(pid, &interpreter) {
            Outcome::NotImported => AsyncioSection::default(),
            Outcome::Unreadable(why) => AsyncioSection { tasks: None, note: Some(why) },
            Outcome::Read(read) => {
                // The coroutines' code objects are read now, after the tasks: a process that exits in between
                // leaves them unnamed, and a tree of unnamed coroutines is not shown as if it were whole.
                let mut unnamed = false;
                let tasks = build(&read, |frames| {
                    let named = self.python_frames(pid, frames);
                    unnamed |= named.iter().any(|frame| frame.file.is_none());
                    named.iter().map(ReportFrame::from_frame).collect()
                });
                if unnamed && asyncio_tasks::exited(pid, &interpreter) {
                    return AsyncioSection { tasks: None, note: Some(asyncio_tasks::EXITED.into()) };
                }
                AsyncioSection { tasks: Some(tasks), note: None }
            }
        }
    }
}

/// The tasks as reported; `frames` names a task's coroutines (innermost first).
pub(crate) fn build(
    read: &AsyncioTasks,
    mut frames: impl FnMut(&[profiler_common::PyFrame]) -> Vec<ReportFrame>,
) -> AsyncioDump {
    let name_of = |address: u64| {
        read.tasks.iter().find(|t| t.address == address).map_or_else(|| task_id(address), |t| t.name.clone())
    };
    let awaits_of = |waiter: &Waiter| match waiter {
        Waiter::Task(task) => vec![*task],
        Waiter::Gather(children) => children.clone(),
        Waiter::Nothing | Waiter::Future(_) | Waiter::Unreadable => Vec::new(),
    };
    let tasks = read
        .tasks
        .iter()
        .map(|task| {
            let awaits = awaits_of(&task.waiter);
            let waits_on = match &task.waiter {
                Waiter::Nothing => "nothing".to_owned(),
                Waiter::Task(other) => format!("task {}", name_of(*other)),
                Waiter::Gather(children) => {
                    let names: Vec<String> = children.iter().map(|&child| name_of(child)).collect();
                    format!("gather of {}", names.join(", "))
                }
                Waiter::Future(type_name) => format!("a {type_name}"),
                Waiter::Unreadable => "a future that could not be read".to_owned(),
            };
            let state = match (&task.waiter, task.running) {
                (_, true) => "running",
                (Waiter::Nothing, false) => "ready",
                _ => "waiting",
            };
            let awaited_by = read
                .tasks
                .iter()
                .filter(|other| awaits_of(&other.waiter).contains(&task.address))
                .map(|other| task_id(other.address))
                .collect();
            TaskDump {
                id: task_id(task.address),
                name: task.name.clone(),
                state,
                waits_on,
                awaits: awaits.into_iter().map(task_id).collect(),
                awaited_by,
                coroutines: frames(&task.coroutines),
                chain_cut: task.chain_cut.map(str::to_owned),
            }
        })
        .collect::<Vec<_>>();
    AsyncioDump { pending: tasks.len(), truncated: read.truncated, tasks }
}

#[cfg(test)]
mod tests {
    use profiler_common::PyFrame;

    use super::*;
    use crate::python::asyncio_tasks::AsyncTask;

    fn frame_of(function: &str, file: &str, line: u32) -> ReportFrame {
        ReportFrame {
            kind: "python",
            function: function.into(),
            file: Some(file.into()),
            line: Some(line),
            module: None,
            build_id: None,
            inlined: false,
        }
    }

    #[test]
    fn tasks_print_as_a_tree_of_who_awaits_whom() {
        let frame = |code| PyFrame { code, ..PyFrame::default() };
        let task = |address, name: &str, waiter, coroutines: &[u64]| AsyncTask {
            address,
            name: name.into(),
            waiter,
            running: false,
            coroutines: coroutines.iter().map(|&code| frame(code)).collect(),
            chain_cut: None,
        };
        let read = AsyncioTasks {
            tasks: vec![
                task(0x30, "request-1", Waiter::Future("_asyncio.Future".into()), &[1, 2]),
                task(0x20, "server", Waiter::Task(0x30), &[3]),
                task(0x10, "Task-1", Waiter::Task(0x20), &[4]),
                task(0x40, "batch", Waiter::Gather(vec![0x50, 0x60]), &[5]),
                task(0x50, "fetch-a", Waiter::Nothing, &[]),
                AsyncTask { running: true, ..task(0x60, "fetch-b", Waiter::Nothing, &[]) },
            ],
            truncated: false,
        };
        let names = ["sleep", "handle", "serve", "main", "run_batch"];
        let asyncio =
            build(&read, |frames| frames.iter().map(|f| frame_of(names[f.code as usize - 1], "app.py", 7)).collect());
        assert_eq!(asyncio.tasks[0].awaited_by, ["0x20"]);
        assert_eq!(asyncio.tasks[3].awaits, ["0x50", "0x60"]);
        assert_eq!(asyncio.tasks[4].state, "ready");
        assert_eq!(asyncio.tasks[5].state, "running");
        let mut text = String::new();
        asyncio.write_text(&mut text);
        let expected = "
asyncio tasks (6 pending):
    task Task-1 (0x10): awaits task server
          main at app.py:7
        └─ task server (0x20): awaits task request-1
              serve at app.py:7
            └─ task request-1 (0x30): awaits a _asyncio.Future
                  sleep at app.py:7
                  handle at app.py:7
    task batch (0x40): awaits gather of fetch-a, fetch-b
          run_batch at app.py:7
        └─ task fetch-a (0x50): ready to run
        └─ task fetch-b (0x60): running
";
        assert_eq!(text, expected);
        let json = serde_json::to_value(&asyncio).unwrap();
        assert_eq!(json["tasks"][1]["waits_on"], "task request-1");
        assert_eq!(json["tasks"][0]["coroutines"][1]["function"], "handle");
    }
}
