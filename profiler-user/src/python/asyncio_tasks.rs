//! asyncio's pending tasks, read from a running interpreter's memory for `profiler dump`: each task's name
//! (`Task.get_name()`), what it waits on (`_fut_waiter`: another task, a `gather` of tasks, or a plain future) and
//! the chain of coroutines it is suspended in, outermost (`Task._coro`) to innermost, each as a code object and an
//! instruction (named and given a line later, as sampled frames are).
//!
//! Where the tasks are, per version (details and sources in docs/cpython.md, "asyncio tasks"):
//! - 3.8–3.11: `sys.modules['asyncio.tasks']._all_tasks`, a `WeakSet` of every task (the C `_asyncio` module's);
//! - 3.12, 3.13: `_scheduled_tasks` (a `WeakSet`) and `_eager_tasks` (a `set`) of the same module;
//! - 3.14, 3.15: C tasks are kept in linked lists, one per thread state and one in the interpreter for tasks of
//!   exited threads, whose offsets the `_asyncio` module publishes in its `AsyncioDebug` section
//!   (`_Py_AsyncioModuleDebugOffsets`); `_scheduled_tasks` holds only tasks of other classes.
//!
//! A coroutine's awaited object is the top of its suspended frame's value stack (what `cr_await` returns): the
//! chain follows it while it is another coroutine or generator, and ends at anything else (a future's iterator).
//!
//! Everything here is read from a process that may be hostile and that goes on running: every read is counted
//! against `MAX_READS`, every count is capped (`MAX_TASKS`, `MAX_COROUTINES`, `MAX_SET_SLOTS`, `MAX_CHILDREN`),
//! every object's type is checked by name before a field of it is used, and a cycle in an await chain ends the
//! chain. What cannot be read is left out and said, never guessed.
// Values here come from a target (its files, its memory, its maps) or the kernel: no implicit arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::collections::HashSet;

use object::{Object as _, ObjectSection as _, ReadCache};
use profiler_common::{PyFrame, PyLayout, PY_LAYOUT_TAGGED_CODE};

use super::{
    detect::Interpreter,
    layout::Version,
    thread_names::{self, Memory, ProcessMemory, Reader},
    threads as py_threads,
};
use crate::{
    process::{
        files::{process_root, TargetFile},
        maps,
        memory::{self, u32_at, u64_at},
    },
    unwind::elf::ElfFile,
};

/// Tasks read from one process; the rest are counted as left out.
pub(crate) const MAX_TASKS: usize = 4096;
/// Coroutines followed down one task's await chain.
pub(crate) const MAX_COROUTINES: usize = 64;
/// Slots of a set's hash table read (a `WeakSet` of 65,536 slots holds up to about 40,000 tasks).
const MAX_SET_SLOTS: u64 = 1 << 16;
/// Children of one `gather` read.
const MAX_CHILDREN: u64 = 1024;
/// Reads of target memory one dump of tasks may make: about 30 per task with a chain of a few coroutines.
const MAX_READS: u32 = 200_000;
/// Base classes followed when checking whether a type is (a subclass of) `_asyncio.Task`.
const MAX_BASES: usize = 16;
/// Slots of a value stack peeked into (a frame's stack is far smaller; this only bounds a garbage count).
const MAX_STACK_SLOTS: u64 = 1 << 16;
/// `PyTypeObject.tp_name`, `tp_base` (3.8–3.15).
const TP_NAME: u64 = 24;
const TP_BASE: u64 = 256;
/// `PyWeakReference.wr_object`, `PyListObject.ob_item`/`ob_size`, `PySetObject.mask`/`table` (3.8–3.15).
const WR_OBJECT: u64 = 16;
const LIST_SIZE: u64 = 16;
const LIST_ITEMS: u64 = 24;
const SET_MASK: u64 = 32;
const SET_TABLE: u64 = 40;

/// Where a version keeps its tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Registry {
    /// 3.8–3.11: `asyncio.tasks._all_tasks`.
    AllTasks,
    /// 3.12–3.13: `asyncio.tasks._scheduled_tasks` and `_eager_tasks`.
    Scheduled,
    /// 3.14+: the linked lists described by `AsyncioDebug`, and `_scheduled_tasks` for other task classes.
    Lists,
}

/// How a suspended coroutine's value stack is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StackTop {
    /// 3.8–3.9, in the `PyFrameObject` `gi_frame` points to: `PyObject **f_stacktop` at `pointer` (NULL while it
    /// runs); `gi_running` (a `char`) in the generator at `running`.
    FrameTop { pointer: u64, running: u64 },
    /// 3.10, in the `PyFrameObject`: `PyObject **f_valuestack` at `valuestack`, `int f_stackdepth` at `depth`,
    /// `f_state` (a `char`, the values of 3.11) at `state`.
    FrameDepth { valuestack: u64, depth: u64, state: u64 },
    /// 3.11–3.13: `int stacktop` (slots in use) at `count`, the slots from `localsplus`.
    Count { count: u64, localsplus: u64 },
    /// 3.14+: `_PyStackRef *stackpointer` at `pointer`; the awaited object is `back` slots below it.
    Pointer { pointer: u64, localsplus: u64, back: u64 },
}

/// The offsets and constants of one version (x86_64, default build), checked on Debian's and Ubuntu's builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AsyncioLayout {
    minor: u8,
    registry: Registry,
    /// `TaskObj.task_fut_waiter`, `task_coro`, `task_name`.
    task_fut_waiter: u64,
    task_coro: u64,
    task_name: u64,
    /// `PyGenObject.gi_iframe` (the frame embedded in the coroutine) and `gi_frame_state` (an `int8_t`); 3.8–3.10:
    /// `gi_frame` (a pointer to the frame object) and 0.
    gen_iframe: u64,
    gen_frame_state: u64,
    stack: StackTop,
}

/// A coroutine's `gi_frame_state`, by what the chain does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GenState {
    /// Not started: its first line, nothing awaited.
    Created,
    /// Suspended at an `await` (3.13+ say so; 3.11–3.12 only say suspended: the awaited object's type decides).
    Suspended,
    /// Running now (the task the event loop is stepping).
    Executing,
    /// Returned or closed: the task is done.
    Finished,
}

impl AsyncioLayout {
    /// The layout of `version`, or why there is none.
    pub(crate) fn for_version(version: Version) -> Result<Self, String> {
        let count = StackTop::Count { count: 64, localsplus: 72 };
        let layout = |minor, registry, task: [u64; 3], gen: [u64; 2], stack| Self {
            minor,
            registry,
            task_fut_waiter: task[0],
            task_coro: task[1],
            task_name: task[2],
            gen_iframe: gen[0],
            gen_frame_state: gen[1],
            stack,
        };
        let frame_object = |minor, task, stack| layout(minor, Registry::AllTasks, task, [16, 0], stack);
        match (version.major, version.minor) {
            (3, 8) => Ok(frame_object(8, [104, 112, 120], StackTop::FrameTop { pointer: 72, running: 24 })),
            (3, 9) => Ok(frame_object(9, [144, 152, 160], StackTop::FrameTop { pointer: 72, running: 24 })),
            (3, 10) => {
                Ok(frame_object(10, [144, 152, 160], StackTop::FrameDepth { valuestack: 64, depth: 80, state: 108 }))
            }
            (3, 11) => Ok(layout(11, Registry::AllTasks, [128, 136, 144], [80, 75], count)),
            (3, 12) => Ok(layout(12, Registry::Scheduled, [128, 136, 144], [72, 67], count)),
            (3, 13) => Ok(layout(13, Registry::Scheduled, [112, 120, 128], [72, 67], count)),
            (3, 14) => Ok(layout(
                14,
                Registry::Lists,
                [120, 128, 136],
                [72, 67],
                StackTop::Pointer { pointer: 64, localsplus: 80, back: 1 },
            )),
            (3, 15) => Ok(layout(
                15,
                Registry::Lists,
                [120, 128, 136],
                [72, 67],
                StackTop::Pointer { pointer: 64, localsplus: 80, back: 2 },
            )),
            _ => Err(format!("asyncio tasks are read on CPython 3.8 to 3.15, not {version}")),
        }
    }

    fn state(&self, raw: i8) -> GenState {
        match self.minor {
            // FRAME_CREATED -2, FRAME_SUSPENDED -1, FRAME_EXECUTING 0, FRAME_COMPLETED 1, FRAME_CLEARED 4 (3.10's
            // `f_state`: FRAME_RETURNED 1, _UNWINDING 2, _RAISED 3, _CLEARED 4).
            ..=12 => match raw {
                -2 => GenState::Created,
                -1 => GenState::Suspended,
                0 => GenState::Executing,
                _ => GenState::Finished,
            },
            // FRAME_CREATED -3, FRAME_SUSPENDED -2, FRAME_SUSPENDED_YIELD_FROM -1, FRAME_EXECUTING 0, ...
            13 | 14 => match raw {
                -3 => GenState::Created,
                -2 | -1 => GenState::Suspended,
                0 => GenState::Executing,
                _ => GenState::Finished,
            },
            // FRAME_CREATED 0, FRAME_SUSPENDED 1, FRAME_SUSPENDED_YIELD_FROM 2, _LOCKED 3, FRAME_EXECUTING 4,
            // FRAME_CLEARED 5.
            _ => match raw {
                0 => GenState::Created,
                1..=3 => GenState::Suspended,
                4 => GenState::Executing,
                _ => GenState::Finished,
            },
        }
    }
}

/// The `_Py_AsyncioModuleDebugOffsets` of 3.14+: `asyncio_task_object` {size, task_name, task_awaited_by,
/// task_is_task, task_awaited_by_is_set, task_coro, task_node}, `asyncio_interpreter_state` {size,
/// asyncio_tasks_head}, `asyncio_thread_state` {size, asyncio_running_loop, asyncio_running_task,
/// asyncio_tasks_head}: 13 words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AsyncioDebug {
    pub task_name: u64,
    pub task_coro: u64,
    pub task_node: u64,
    pub interp_tasks_head: u64,
    pub thread_tasks_head: u64,
}

/// Bytes of `_Py_AsyncioModuleDebugOffsets`.
pub(crate) const ASYNCIO_DEBUG_LEN: usize = 13 * 8;

impl AsyncioDebug {
    /// Parses the table; `None` when a field lies outside the struct it describes (not this table, or not the
    /// version of it we know).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let word = |index: u64| u64_at(bytes, index.checked_mul(8)?);
        let (task_size, interp_size, thread_size) = (word(0)?, word(7)?, word(9)?);
        let inside = |offset: u64, size: u64, width: u64| {
            size <= 1 << 20 && offset.checked_add(width).is_some_and(|end| end <= size)
        };
        let debug = Self {
            task_name: word(1)?,
            task_coro: word(5)?,
            task_node: word(6)?,
            interp_tasks_head: word(8)?,
            thread_tasks_head: word(12)?,
        };
        let fits = inside(debug.task_name, task_size, 8)
            && inside(debug.task_coro, task_size, 8)
            && inside(debug.task_node, task_size, 16)
            && inside(debug.interp_tasks_head, interp_size, 16)
            && inside(debug.thread_tasks_head, thread_size, 16)
            // `task_fut_waiter` is read just before `task_coro`.
            && debug.task_coro >= 24;
        fits.then_some(debug)
    }
}

/// What a task waits on (`_fut_waiter`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Waiter {
    /// Nothing: it is ready to run, or running.
    Nothing,
    /// Another task.
    Task(u64),
    /// A `gather` (`_GatheringFuture`) of these tasks.
    Gather(Vec<u64>),
    /// Another kind of future, by its type's name (`_asyncio.Future` for `asyncio.sleep`, a `Queue`, an `Event`).
    Future(String),
    /// Its `_fut_waiter` could not be read.
    Unreadable,
}

/// One pending task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AsyncTask {
    pub address: u64,
    pub name: String,
    pub waiter: Waiter,
    /// The event loop is stepping it now (its coroutine is executing).
    pub running: bool,
    /// Its coroutines, innermost first, as the sampler would send them (code object, instruction).
    pub coroutines: Vec<PyFrame>,
    /// Why the chain ends early, if it does (a cycle, `MAX_COROUTINES`, an unreadable coroutine).
    pub chain_cut: Option<&'static str>,
}

/// The pending tasks of a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AsyncioTasks {
    pub tasks: Vec<AsyncTask>,
    /// Tasks left out by `MAX_TASKS`, `MAX_SET_SLOTS` or the read budget: the list is not whole.
    pub truncated: bool,
}

/// What reading a process's tasks found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `asyncio` is not imported: nothing to show.
    NotImported,
    Read(AsyncioTasks),
    /// `asyncio` is imported but its tasks cannot be read (the reason, one line).
    Unreadable(String),
}

/// The pending tasks of `pid` now. `interpreter`: its detected Python.
pub(crate) fn read(pid: u32, interpreter: &Interpreter) -> Outcome {
    let outcome = read_now(pid, interpreter);
    if exited(pid, interpreter) {
        return Outcome::Unreadable(EXITED.into());
    }
    outcome
}

/// Why the tasks of a process that exited while they were read are not shown.
pub(crate) const EXITED: &str = "not readable: the process exited while its tasks were read";

/// Whether `pid`'s memory is gone. A process that exits while it is read (a crashing one) fails some reads and not
/// others: what was read may be a part that looks whole, or asyncio may look not imported. Its memory, once gone,
/// does not come back, so if `_PyRuntime` still reads now, every read before was of the live process.
pub(crate) fn exited(pid: u32, interpreter: &Interpreter) -> bool {
    memory::read(pid, interpreter.layouts.kernel.runtime, 8).is_err()
}

fn read_now(pid: u32, interpreter: &Interpreter) -> Outcome {
    let Some(target) = thread_names::target_of(pid, interpreter) else {
        return Outcome::Unreadable("the interpreter state cannot be read".into());
    };
    let memory = ProcessMemory(pid);
    let reader = Reader::new(&memory, &target, MAX_READS);
    if reader.module_dict("asyncio.tasks").is_none() {
        // Not imported, unless `sys.modules` itself could not be read.
        if reader.module_global("sys", "__name__").is_none() {
            return Outcome::Unreadable("sys.modules cannot be read".into());
        }
        return Outcome::NotImported;
    }
    if interpreter.layouts.free_threaded() {
        // Every object's header is 16 bytes longer there, and the walk below reads sets, lists, tasks and frames at
        // the default build's offsets.
        return Outcome::Unreadable(format!(
            "the tasks of a free-threaded Python {} cannot be read (default builds only)",
            interpreter.version
        ));
    }
    let layout = match AsyncioLayout::for_version(interpreter.version) {
        Ok(layout) => layout,
        Err(why) => return Outcome::Unreadable(why),
    };
    let (debug, tstates) = if layout.registry == Registry::Lists {
        let Some(debug) = asyncio_debug(pid, interpreter) else {
            return Outcome::Unreadable("the _asyncio module's AsyncioDebug section was not found".into());
        };
        let tstates = match py_threads::threads(pid, &interpreter.layouts.kernel) {
            Ok(threads) => threads.into_iter().map(|t| t.tstate).collect(),
            Err(err) => return Outcome::Unreadable(format!("the thread states cannot be read: {err:#}")),
        };
        (Some(debug), tstates)
    } else {
        (None, Vec::new())
    };
    read_with(&reader, &layout, &interpreter.layouts.kernel, debug.as_ref(), &tstates)
}

/// The walk itself, on any `Memory` (tests give it fake heaps).
fn read_with<M: Memory>(
    reader: &Reader<'_, M>,
    layout: &AsyncioLayout,
    kernel: &PyLayout,
    debug: Option<&AsyncioDebug>,
    tstates: &[u64],
) -> Outcome {
    let walk = Walk { reader, layout: adjusted(layout, debug), kernel };
    // `sys.modules` of a large app holds thousands of modules, each key a read: searched once.
    let globals = reader.module_dict("asyncio.tasks");
    let global = |name: &str| reader.lookup(globals?, name);
    let mut candidates = Vec::new();
    let mut truncated = false;
    let mut found_registry = false;
    let weak_sets: &[&str] = match layout.registry {
        Registry::AllTasks => &["_all_tasks"],
        Registry::Scheduled | Registry::Lists => &["_scheduled_tasks"],
    };
    for name in weak_sets {
        if let Some(set) = global(name) {
            found_registry |= walk.weak_set(set, &mut candidates, &mut truncated).is_some();
        }
    }
    if layout.registry == Registry::Scheduled {
        if let Some(set) = global("_eager_tasks") {
            found_registry |= walk.set_members(set, false, &mut candidates, &mut truncated).is_some();
        }
    }
    if let Some(debug) = debug {
        let interp = reader.target.interp;
        let heads = tstates
            .iter()
            .filter_map(|tstate| tstate.checked_add(debug.thread_tasks_head))
            .chain(interp.checked_add(debug.interp_tasks_head));
        for head in heads {
            found_registry |= walk.list(head, debug.task_node, &mut candidates, &mut truncated).is_some();
        }
    }
    if !found_registry {
        return Outcome::Unreadable("the registry of tasks cannot be read".into());
    }
    let mut seen = HashSet::new();
    let mut tasks = Vec::new();
    for address in candidates {
        if !seen.insert(address) {
            continue;
        }
        if tasks.len() >= MAX_TASKS {
            truncated = true;
            break;
        }
        if let Some(task) = walk.task(address) {
            tasks.push(task);
        }
    }
    truncated |= reader.exhausted();
    Outcome::Read(AsyncioTasks { tasks, truncated })
}

/// 3.14+: the task fields as the running build's table gives them (`task_fut_waiter` precedes `task_coro`).
fn adjusted(layout: &AsyncioLayout, debug: Option<&AsyncioDebug>) -> AsyncioLayout {
    match debug {
        Some(debug) => AsyncioLayout {
            task_name: debug.task_name,
            task_coro: debug.task_coro,
            task_fut_waiter: debug.task_coro.saturating_sub(8),
            ..*layout
        },
        None => *layout,
    }
}

struct Walk<'r, 'a, M> {
    reader: &'r Reader<'a, M>,
    layout: AsyncioLayout,
    kernel: &'r PyLayout,
}

impl<M: Memory> Walk<'_, '_, M> {
    /// The tasks a `WeakSet` refers to (its `data` set of weak references).
    fn weak_set(&self, weak_set: u64, out: &mut Vec<u64>, truncated: &mut bool) -> Option<()> {
        let attributes = self.reader.attributes(weak_set)?;
        let data = attributes.into_iter().find(|&(key, _)| self.reader.is_ascii_str(key, "data"))?.1;
        self.set_members(data, true, out, truncated)
    }

    /// The members of the `set` at `set` (through their weak references when `weak`).
    fn set_members(&self, set: u64, weak: bool, out: &mut Vec<u64>, truncated: &mut bool) -> Option<()> {
        let head = self.reader.read(set, 48)?;
        if self.type_name(set)? != "set" {
            return None;
        }
        let slots = u64_at(&head, SET_MASK)?.checked_add(1)?;
        if slots > MAX_SET_SLOTS {
            *truncated = true;
        }
        let slots = slots.min(MAX_SET_SLOTS);
        let table = self.reader.read(u64_at(&head, SET_TABLE)?, slots.checked_mul(16)?)?;
        for slot in 0..slots {
            let Some(key) = u64_at(&table, slot.checked_mul(16)?).filter(|&key| key != 0) else { continue };
            let member = if weak { self.reader.u64(key.checked_add(WR_OBJECT)) } else { Some(key) };
            if let Some(member) = member.filter(|&m| m != 0) {
                if out.len() >= MAX_TASKS {
                    *truncated = true;
                    return Some(());
                }
                out.push(member);
            }
        }
        Some(())
    }

    /// The tasks of the linked list whose head (a `struct llist_node {next, prev}`) is at `head`.
    fn list(&self, head: u64, node_offset: u64, out: &mut Vec<u64>, truncated: &mut bool) -> Option<()> {
        let mut node = self.reader.u64(Some(head))?;
        let mut walked = 0usize;
        while node != head && node != 0 {
            if walked >= MAX_TASKS || out.len() >= MAX_TASKS {
                *truncated = true;
                break;
            }
            walked = walked.checked_add(1)?;
            out.push(node.checked_sub(node_offset)?);
            node = self.reader.u64(Some(node))?;
        }
        Some(())
    }

    /// The task at `address`, if it is a pending task.
    fn task(&self, address: u64) -> Option<AsyncTask> {
        if !self.is_subclass(address, "_asyncio.Task") {
            return None;
        }
        let layout = &self.layout;
        let fields = self.reader.read(address.checked_add(layout.task_fut_waiter)?, 8)?;
        let coro = self.reader.u64(address.checked_add(layout.task_coro))?;
        let name_object = self.reader.u64(address.checked_add(layout.task_name))?;
        let mut coroutines = Vec::new();
        let mut chain_cut = None;
        let mut running = false;
        let mut seen = HashSet::new();
        let mut current = coro;
        let mut first = true;
        loop {
            if !seen.insert(current) {
                chain_cut = Some("the await chain loops");
                break;
            }
            if coroutines.len() >= MAX_COROUTINES {
                chain_cut = Some("more coroutines than are followed");
                break;
            }
            let Some(step) = self.coroutine(current) else {
                if first {
                    // Not a coroutine we can read: a task made of another awaitable, or freed meanwhile.
                    return None;
                }
                chain_cut = Some("a coroutine could not be read");
                break;
            };
            match step.state {
                // The task's own coroutine finished: the task is done, not pending.
                GenState::Finished if first => return None,
                GenState::Executing => running = true,
                _ => {}
            }
            first = false;
            coroutines.push(step.frame);
            match step.awaits {
                Some(next) => current = next,
                None => break,
            }
        }
        coroutines.reverse();
        Some(AsyncTask {
            address,
            name: self.task_name(name_object).unwrap_or_else(|| "?".into()),
            waiter: self.waiter(u64_at(&fields, 0)?),
            running,
            coroutines,
            chain_cut,
        })
    }

    /// `Task.get_name()`: the `str`, or `Task-N` for 3.12+'s lazily formatted counter.
    fn task_name(&self, name: u64) -> Option<String> {
        match self.type_name(name)?.as_str() {
            "str" => self.reader.string(name),
            "int" => self.reader.int(name).map(|n| format!("Task-{n}")),
            _ => None,
        }
    }

    fn waiter(&self, waiter: u64) -> Waiter {
        if waiter == 0 {
            return Waiter::Nothing;
        }
        let Some(type_name) = self.type_name(waiter) else { return Waiter::Unreadable };
        if self.is_subclass(waiter, "_asyncio.Task") {
            return Waiter::Task(waiter);
        }
        if type_name == "_GatheringFuture" {
            return match self.gather_children(waiter) {
                Some(children) => Waiter::Gather(children),
                None => Waiter::Unreadable,
            };
        }
        Waiter::Future(type_name)
    }

    /// The tasks among a `_GatheringFuture`'s `_children`.
    fn gather_children(&self, gathering: u64) -> Option<Vec<u64>> {
        let attributes = self.reader.attributes(gathering)?;
        let children = attributes.into_iter().find(|&(key, _)| self.reader.is_ascii_str(key, "_children"))?.1;
        if self.type_name(children)? != "list" {
            return None;
        }
        let head = self.reader.read(children, 32)?;
        let count = u64_at(&head, LIST_SIZE)?.min(MAX_CHILDREN);
        if count == 0 {
            return Some(Vec::new());
        }
        let items = self.reader.read(u64_at(&head, LIST_ITEMS)?, count.checked_mul(8)?)?;
        Some(
            (0..count)
                .filter_map(|i| u64_at(&items, i.checked_mul(8)?))
                .filter(|&child| self.is_subclass(child, "_asyncio.Task"))
                .collect(),
        )
    }

    /// A coroutine (or generator) object: its frame, its state and, when suspended, the coroutine it awaits.
    fn coroutine(&self, address: u64) -> Option<Step> {
        let type_name = self.type_name(address)?;
        if !matches!(type_name.as_str(), "coroutine" | "generator" | "async_generator") {
            return None;
        }
        let layout = &self.layout;
        let kernel = self.kernel;
        let localsplus = match layout.stack {
            StackTop::Count { localsplus, .. } | StackTop::Pointer { localsplus, .. } => localsplus,
            StackTop::FrameTop { .. } | StackTop::FrameDepth { .. } => return self.frame_object_coroutine(address),
        };
        let frame = address.checked_add(layout.gen_iframe)?;
        let header_len = layout.gen_iframe.checked_add(localsplus)?;
        let header = self.reader.read(address, header_len)?;
        let raw_state = i8::from_le_bytes([*header.get(usize::try_from(layout.gen_frame_state).ok()?)?]);
        let state = layout.state(raw_state);
        let in_frame = |offset: u64| u64_at(&header, layout.gen_iframe.checked_add(offset)?);
        let mut code = in_frame(kernel.frame_code)?;
        if kernel.flags & PY_LAYOUT_TAGGED_CODE != 0 {
            code &= !3;
        }
        let instr = in_frame(kernel.frame_instr)?;
        if code == 0 {
            return None;
        }
        let awaits = match state {
            GenState::Suspended => self.top_of_stack(frame, &header).filter(|&next| {
                self.type_name(next)
                    .is_some_and(|name| matches!(name.as_str(), "coroutine" | "generator" | "async_generator"))
            }),
            _ => None,
        };
        Some(Step { frame: PyFrame { code, instr, ..PyFrame::default() }, state, awaits })
    }

    /// 3.8–3.10: a coroutine whose frame is a `PyFrameObject` of its own (`gi_frame`, NULL once it finished).
    fn frame_object_coroutine(&self, address: u64) -> Option<Step> {
        let layout = &self.layout;
        let kernel = self.kernel;
        let generator = self.reader.read(address, 32)?;
        let frame = u64_at(&generator, layout.gen_iframe)?;
        let finished = Step { frame: PyFrame::default(), state: GenState::Finished, awaits: None };
        if frame == 0 {
            return Some(finished);
        }
        let header = self.reader.read(frame, 112)?;
        let code = u64_at(&header, kernel.frame_code)?;
        let instr = u64_at(&header, kernel.frame_instr)?;
        if code == 0 {
            return None;
        }
        let last_instruction = u32_at(&header, kernel.frame_instr)?;
        let (state, top) = match layout.stack {
            StackTop::FrameTop { pointer, running } => {
                let top = u64_at(&header, pointer)?;
                let state = if *generator.get(usize::try_from(running).ok()?)? != 0 {
                    GenState::Executing
                } else if last_instruction == u32::MAX {
                    GenState::Created
                } else if top == 0 {
                    GenState::Finished
                } else {
                    GenState::Suspended
                };
                (state, top.checked_sub(8))
            }
            StackTop::FrameDepth { valuestack, depth, state } => {
                let state = layout.state(i8::from_le_bytes([*header.get(usize::try_from(state).ok()?)?]));
                let used = u64::from(u32_at(&header, depth)?);
                let top = if used == 0 || used > MAX_STACK_SLOTS {
                    None
                } else {
                    u64_at(&header, valuestack)?.checked_add(used.checked_sub(1)?.checked_mul(8)?)
                };
                (state, top)
            }
            StackTop::Count { .. } | StackTop::Pointer { .. } => return None,
        };
        let awaits = match (state, top) {
            (GenState::Suspended, Some(slot)) => self.reader.u64(Some(slot)).filter(|&next| {
                next != 0
                    && self
                        .type_name(next)
                        .is_some_and(|name| matches!(name.as_str(), "coroutine" | "generator" | "async_generator"))
            }),
            _ => None,
        };
        Some(Step { frame: PyFrame { code, instr, ..PyFrame::default() }, state, awaits })
    }

    /// The object on top of the value stack of the suspended frame at `frame` (`header`: the generator's bytes up
    /// to the frame's `localsplus`).
    fn top_of_stack(&self, frame: u64, header: &[u8]) -> Option<u64> {
        let iframe = self.layout.gen_iframe;
        let slot = match self.layout.stack {
            StackTop::Count { count, localsplus } => {
                let used = u64::from(u32_at(header, iframe.checked_add(count)?)?);
                if used == 0 || used > MAX_STACK_SLOTS {
                    return None;
                }
                frame.checked_add(localsplus)?.checked_add(used.checked_sub(1)?.checked_mul(8)?)?
            }
            StackTop::Pointer { pointer, localsplus, back } => {
                let stack_pointer = u64_at(header, iframe.checked_add(pointer)?)?;
                let base = frame.checked_add(localsplus)?;
                let slot = stack_pointer.checked_sub(back.checked_mul(8)?)?;
                if slot < base || slot >= base.checked_add(MAX_STACK_SLOTS.checked_mul(8)?)? {
                    return None;
                }
                slot
            }
            StackTop::FrameTop { .. } | StackTop::FrameDepth { .. } => return None,
        };
        // 3.14+ stack references carry tag bits in the low two bits.
        self.reader.u64(Some(slot)).map(|object| object & !3).filter(|&object| object != 0)
    }

    /// The `tp_name` of the object at `object`'s type.
    fn type_name(&self, object: u64) -> Option<String> {
        let ty = self.reader.u64(object.checked_add(8))?;
        self.name_of_type(ty)
    }

    fn name_of_type(&self, ty: u64) -> Option<String> {
        let name = self.reader.u64(ty.checked_add(TP_NAME))?;
        // Short reads first: a name may end near the end of its mapping.
        for len in [64u64, 24] {
            if let Some(bytes) = self.reader.read(name, len) {
                let end = bytes.iter().position(|&b| b == 0)?;
                return std::str::from_utf8(bytes.get(..end)?).ok().map(str::to_owned);
            }
        }
        None
    }

    /// Whether the object at `object` is of the type named `name` or of a subclass of it.
    fn is_subclass(&self, object: u64, name: &str) -> bool {
        let Some(mut ty) = self.reader.u64(object.checked_add(8)) else { return false };
        for _ in 0..MAX_BASES {
            if ty == 0 {
                return false;
            }
            if self.name_of_type(ty).as_deref() == Some(name) {
                return true;
            }
            match self.reader.u64(ty.checked_add(TP_BASE)) {
                Some(base) => ty = base,
                None => return false,
            }
        }
        false
    }
}

struct Step {
    frame: PyFrame,
    state: GenState,
    awaits: Option<u64>,
}

/// The `AsyncioDebug` table of `pid`'s `_asyncio` module (a shared library, or built into the interpreter), read
/// from the process.
fn asyncio_debug(pid: u32, interpreter: &Interpreter) -> Option<AsyncioDebug> {
    let process_maps = maps::read(pid).ok()?;
    let root = process_root(pid);
    let mut tried = HashSet::new();
    for mapping in process_maps.mappings.iter().filter(|m| m.executable && m.is_file_backed()) {
        let name = mapping.path.rsplit('/').next().unwrap_or(&mapping.path);
        if !(name.starts_with("_asyncio.") || mapping.path == interpreter.module_path) {
            continue;
        }
        if !tried.insert(mapping.path.clone()) {
            continue;
        }
        let Ok(target) = TargetFile::open(pid, mapping, &root) else { continue };
        let svma = {
            let cache = ReadCache::new(&target.file);
            let Ok(elf) = object::File::parse(&cache) else { continue };
            let Some(section) = elf.section_by_name(".AsyncioDebug") else { continue };
            section.address()
        };
        let Ok(elf) = ElfFile::from_file(&target.file, &mapping.path) else { continue };
        let Some(bias) = elf.load_bias(mapping.start, mapping.file_offset, true) else { continue };
        let bytes = memory::read(pid, svma.wrapping_add(bias), ASYNCIO_DEBUG_LEN).ok()?;
        return AsyncioDebug::parse(&bytes);
    }
    None
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // the fake heap's own addresses, chosen by the test
mod tests {
    use super::*;
    use crate::python::{
        layout::Layouts,
        thread_names::{
            fake::{layouts, FakeMemory, FUZZ_BASE},
            Target,
        },
    };

    fn words(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// A 3.11 heap: types by name, objects at increasing addresses.
    struct Heap {
        memory: FakeMemory,
        next: u64,
        layouts: Layouts,
        types: HashMap<&'static str, u64>,
    }

    use std::collections::HashMap;

    impl Heap {
        fn new() -> Self {
            let mut heap =
                Self { memory: FakeMemory::default(), next: FUZZ_BASE, layouts: layouts(11), types: HashMap::new() };
            for name in [
                "str",
                "dict",
                "int",
                "set",
                "list",
                "weakref.ReferenceType",
                "WeakSet",
                "_asyncio.Future",
                "_asyncio.FutureIter",
                "coroutine",
                "_GatheringFuture",
            ] {
                heap.add_type(name, 0);
            }
            let future = heap.types["_asyncio.Future"];
            heap.add_type("_asyncio.Task", future);
            heap
        }

        /// A type named `name`, base `base`; instances keep a dict at 16 (`tp_dictoffset`).
        fn add_type(&mut self, name: &'static str, base: u64) {
            let mut name_bytes = format!("{name}\0").into_bytes();
            name_bytes.resize(64, 0);
            let name_at = self.alloc(name_bytes);
            let mut ty = vec![0u8; 896];
            ty[24..32].copy_from_slice(&name_at.to_le_bytes());
            ty[256..264].copy_from_slice(&base.to_le_bytes());
            ty[288..296].copy_from_slice(&16u64.to_le_bytes());
            let at = self.alloc(ty);
            self.types.insert(name, at);
        }

        fn alloc(&mut self, bytes: Vec<u8>) -> u64 {
            let at = self.next;
            self.next += (bytes.len() as u64).next_multiple_of(16) + 64;
            self.memory.blocks.insert(at, bytes);
            at
        }

        fn object(&mut self, ty: &str, rest: &[u64]) -> u64 {
            let mut fields = vec![1, self.types[ty]];
            fields.extend(rest);
            self.alloc(words(&fields))
        }

        fn str(&mut self, text: &str) -> u64 {
            let mut bytes = words(&[1, self.types["str"], text.len() as u64, u64::MAX]);
            bytes.extend(u64::from(1u32 << 5 | 1 << 6 | 1 << 2).to_le_bytes());
            bytes.resize(self.layouts.code.ascii_data as usize, 0);
            bytes.extend(text.as_bytes());
            bytes.push(0);
            self.alloc(bytes)
        }

        /// A dict of `str` keys (3.11: log2 keys, unicode kind).
        fn dict(&mut self, items: &[(&str, u64)]) -> u64 {
            let mut keys = words(&[1, 3 | 3 << 8 | 1 << 16, 0, items.len() as u64]);
            keys.extend([0u8; 8]);
            for &(key, value) in items {
                let key = self.str(key);
                keys.extend(words(&[key, value]));
            }
            let keys = self.alloc(keys);
            self.object("dict", &[items.len() as u64, 0, keys, 0])
        }

        /// A `set` of `members`, in a table of `slots` slots.
        fn set(&mut self, members: &[u64], slots: u64) -> u64 {
            let mut table = Vec::new();
            for slot in 0..slots as usize {
                table.extend(words(&[members.get(slot).copied().unwrap_or(0), 0x77]));
            }
            let table = self.alloc(table);
            self.object("set", &[members.len() as u64, members.len() as u64, slots - 1, table, 0, 0])
        }

        fn weak_set(&mut self, tasks: &[u64]) -> u64 {
            let refs: Vec<u64> = tasks.iter().map(|&task| self.object("weakref.ReferenceType", &[task, 0])).collect();
            let data = self.set(&refs, 8);
            let attributes = self.dict(&[("data", data)]);
            self.object("WeakSet", &[attributes])
        }

        /// A suspended 3.11 coroutine of code `code` awaiting `awaits` (0: nothing) on top of its stack.
        fn coroutine(&mut self, code: u64, awaits: u64) -> u64 {
            let mut bytes = vec![0u8; 152];
            bytes[8..16].copy_from_slice(&self.types["coroutine"].to_le_bytes());
            bytes[75] = (-1i8) as u8; // FRAME_SUSPENDED
            bytes[80 + 32..80 + 40].copy_from_slice(&code.to_le_bytes());
            bytes[80 + 56..80 + 64].copy_from_slice(&(code + 0x40).to_le_bytes());
            bytes[80 + 64..80 + 68].copy_from_slice(&1u32.to_le_bytes());
            bytes.extend(words(&[awaits]));
            self.alloc(bytes)
        }

        fn set_word(&mut self, object: u64, at: usize, value: u64) {
            self.memory.blocks.get_mut(&object).unwrap()[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }

        /// A task named `name` (a `str`) whose coroutine is `coro`, waiting on `waiter`.
        fn task(&mut self, name: &str, coro: u64, waiter: u64) -> u64 {
            let name = self.str(name);
            let mut fields = vec![0u64; 16];
            fields.extend([waiter, coro, name, 0]);
            self.object("_asyncio.Task", &fields[2..])
        }

        /// `sys.modules` with `asyncio.tasks`, whose globals are `globals`; returns the interpreter.
        fn interpreter(&mut self, globals: &[(&str, u64)]) -> u64 {
            let module_dict = self.dict(globals);
            let module = self.alloc(words(&[1, 0x999, module_dict]));
            let modules = self.dict(&[("sys", 0x10), ("asyncio.tasks", module)]);
            let at = self.layouts.objects.interp_modules as usize;
            let mut interp = vec![0u8; at + 8];
            interp[at..].copy_from_slice(&modules.to_le_bytes());
            self.alloc(interp)
        }

        fn read(&self, interp: u64) -> Outcome {
            let target = Target {
                objects: &self.layouts.objects,
                code: &self.layouts.code,
                interp,
                unicode_type: None,
                dict_type: None,
                long_type: None,
            };
            let reader = Reader::new(&self.memory, &target, MAX_READS);
            let layout = AsyncioLayout::for_version(Version { major: 3, minor: 11 }).unwrap();
            read_with(&reader, &layout, &self.layouts.kernel, None, &[])
        }
    }

    fn tasks(outcome: Outcome) -> AsyncioTasks {
        match outcome {
            Outcome::Read(tasks) => tasks,
            other => panic!("{other:?}"),
        }
    }

    /// `server` awaits `request-1` (in `handle` → `sleep` → a future); `batch` gathers `fetch-a`.
    fn app() -> (Heap, u64, [u64; 4]) {
        let mut heap = Heap::new();
        let (serve, handle, sleep, run_batch, fetch) =
            (0xc0de_0000, 0xc0de_1000, 0xc0de_2000, 0xc0de_3000, 0xc0de_4000);
        let future = heap.object("_asyncio.Future", &[0; 14]);
        let iter = heap.object("_asyncio.FutureIter", &[future]);
        let sleeping = heap.coroutine(sleep, iter);
        let handling = heap.coroutine(handle, sleeping);
        let request = heap.task("request-1", handling, future);
        let serving = heap.coroutine(serve, 0);
        let server = heap.task("server", serving, request);
        let fetching = heap.coroutine(fetch, 0);
        let fetch_a = heap.task("fetch-a", fetching, future);
        let children = heap.object("list", &[1, 0, 1]);
        let items = heap.alloc(words(&[fetch_a]));
        heap.set_word(children, 24, items);
        let gather_attributes = heap.dict(&[("_children", children)]);
        let gathering = heap.object("_GatheringFuture", &[gather_attributes]);
        let batching = heap.coroutine(run_batch, 0);
        let batch = heap.task("batch", batching, gathering);
        let all = heap.weak_set(&[server, request, batch, fetch_a]);
        let interp = heap.interpreter(&[("__name__", 0x10), ("_all_tasks", all)]);
        (heap, interp, [server, request, batch, fetch_a])
    }

    #[test]
    fn reads_tasks_what_they_await_and_their_coroutines() {
        let (heap, interp, [server, request, batch, fetch_a]) = app();
        let read = tasks(heap.read(interp));
        assert!(!read.truncated);
        let by_name = |name: &str| read.tasks.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{read:?}"));
        assert_eq!(by_name("server").waiter, Waiter::Task(request));
        assert_eq!(by_name("server").address, server);
        assert_eq!(by_name("batch").waiter, Waiter::Gather(vec![fetch_a]));
        assert_eq!(by_name("batch").address, batch);
        let request_task = by_name("request-1");
        assert_eq!(request_task.waiter, Waiter::Future("_asyncio.Future".into()));
        // Innermost first: sleep, then handle; each with its instruction.
        let codes: Vec<(u64, u64)> = request_task.coroutines.iter().map(|f| (f.code, f.instr)).collect();
        assert_eq!(codes, [(0xc0de_2000, 0xc0de_2040), (0xc0de_1000, 0xc0de_1040)]);
        assert_eq!(request_task.chain_cut, None);
        assert!(!request_task.running);
        assert_eq!(read.tasks.len(), 4);
    }

    #[test]
    fn a_cycle_in_an_await_chain_ends_the_chain() {
        let mut heap = Heap::new();
        let first = heap.coroutine(0xc0de_0000, 0);
        let second = heap.coroutine(0xc0de_1000, first);
        // The first awaits the second, which awaits the first.
        let at = 152;
        heap.set_word(first, at, second);
        let task = heap.task("looping", first, 0);
        let all = heap.weak_set(&[task]);
        let interp = heap.interpreter(&[("__name__", 0x10), ("_all_tasks", all)]);
        let read = tasks(heap.read(interp));
        assert_eq!(read.tasks.len(), 1);
        assert_eq!(read.tasks[0].chain_cut, Some("the await chain loops"));
        assert_eq!(read.tasks[0].coroutines.len(), 2);
        assert_eq!(read.tasks[0].waiter, Waiter::Nothing);
    }

    #[test]
    fn done_tasks_dead_references_and_other_objects_are_left_out() {
        let mut heap = Heap::new();
        let finished = heap.coroutine(0xc0de_0000, 0);
        heap.memory.blocks.get_mut(&finished).unwrap()[75] = 1; // FRAME_COMPLETED
        let done = heap.task("done", finished, 0);
        let not_a_task = heap.object("_asyncio.Future", &[0; 20]);
        let dead = 0x10; // a reference whose object is gone reads as None, not a task
        let all = heap.weak_set(&[done, not_a_task, dead]);
        let interp = heap.interpreter(&[("__name__", 0x10), ("_all_tasks", all)]);
        assert_eq!(tasks(heap.read(interp)).tasks, []);
    }

    #[test]
    fn a_process_without_asyncio_or_without_its_registry_says_so() {
        let mut heap = Heap::new();
        let modules = heap.dict(&[("sys", 0x10)]);
        let at = heap.layouts.objects.interp_modules as usize;
        let mut interp = vec![0u8; at + 8];
        interp[at..].copy_from_slice(&modules.to_le_bytes());
        let interp = heap.alloc(interp);
        let target = Target {
            objects: &heap.layouts.objects,
            code: &heap.layouts.code,
            interp,
            unicode_type: None,
            dict_type: None,
            long_type: None,
        };
        let reader = Reader::new(&heap.memory, &target, MAX_READS);
        assert_eq!(reader.module_global("asyncio.tasks", "__name__"), None);
        let without_registry = heap.interpreter(&[("__name__", 0x10)]);
        assert!(matches!(heap.read(without_registry), Outcome::Unreadable(_)));
    }

    #[test]
    fn garbage_gives_fewer_tasks_rather_than_a_panic() {
        let (mut heap, interp, _) = app();
        let addresses: Vec<u64> = heap.memory.blocks.keys().copied().collect();
        for address in addresses {
            let len = heap.memory.blocks[&address].len();
            for at in (0..len).step_by(5) {
                let block = heap.memory.blocks.get_mut(&address).unwrap();
                let old = block[at];
                block[at] = old ^ 0xff;
                if let Outcome::Read(read) = heap.read(interp) {
                    assert!(read.tasks.len() <= 4);
                    assert!(read.tasks.iter().all(|t| t.coroutines.len() <= MAX_COROUTINES));
                }
                heap.memory.blocks.get_mut(&address).unwrap()[at] = old;
            }
        }
    }

    #[test]
    fn a_huge_set_is_read_up_to_its_cap() {
        let mut heap = Heap::new();
        // A set claiming 2^40 slots: only MAX_SET_SLOTS are read, and the result says it is not whole.
        let table = heap.alloc(vec![0u8; (MAX_SET_SLOTS * 16) as usize]);
        let set = heap.object("set", &[0, 0, (1 << 40) - 1, table, 0, 0]);
        let attributes = heap.dict(&[("data", set)]);
        let all = heap.object("WeakSet", &[attributes]);
        let interp = heap.interpreter(&[("__name__", 0x10), ("_all_tasks", all)]);
        let read = tasks(heap.read(interp));
        assert!(read.truncated && read.tasks.is_empty());
    }

    /// 3.8–3.10 coroutines point to frame objects: `sleep` suspended in `handle`, read through 3.9's `f_stacktop`
    /// and 3.10's `f_valuestack` + `f_stackdepth` + `f_state`.
    #[test]
    fn reads_chains_of_frame_object_coroutines() {
        for minor in [9u8, 10] {
            let mut heap = Heap::new();
            let kernel = layouts(minor).kernel;
            let layout = AsyncioLayout::for_version(Version { major: 3, minor }).unwrap();
            let coroutine = |heap: &mut Heap, code: u64, awaits: u64, running: bool| {
                let mut frame = vec![0u8; 120];
                frame[kernel.frame_code as usize..][..8].copy_from_slice(&code.to_le_bytes());
                frame[kernel.frame_instr as usize..][..4].copy_from_slice(&6u32.to_le_bytes());
                let stack = heap.alloc(words(&[0x55, awaits]));
                match layout.stack {
                    StackTop::FrameTop { pointer, .. } => {
                        frame[pointer as usize..][..8].copy_from_slice(&(stack + 16).to_le_bytes())
                    }
                    StackTop::FrameDepth { valuestack, depth, state } => {
                        frame[valuestack as usize..][..8].copy_from_slice(&stack.to_le_bytes());
                        frame[depth as usize..][..4].copy_from_slice(&2u32.to_le_bytes());
                        frame[state as usize] = if running { 0 } else { (-1i8) as u8 };
                    }
                    _ => unreachable!(),
                }
                let frame = heap.alloc(frame);
                heap.object("coroutine", &[frame, u64::from(running && minor < 10), code])
            };
            let future_iter = heap.object("_asyncio.FutureIter", &[0]);
            let sleeping = coroutine(&mut heap, 0xc0de_2000, future_iter, false);
            let handling = coroutine(&mut heap, 0xc0de_1000, sleeping, false);
            let running = coroutine(&mut heap, 0xc0de_3000, sleeping, true);
            // A finished coroutine has no frame.
            let done = heap.object("coroutine", &[0, 0, 0xc0de_4000]);
            let target = Target {
                objects: &heap.layouts.objects,
                code: &heap.layouts.code,
                interp: 0,
                unicode_type: None,
                dict_type: None,
                long_type: None,
            };
            let reader = Reader::new(&heap.memory, &target, MAX_READS);
            let walk = Walk { reader: &reader, layout, kernel: &kernel };
            let step = walk.coroutine(handling).unwrap();
            assert_eq!((step.state, step.awaits), (GenState::Suspended, Some(sleeping)), "3.{minor}");
            assert_eq!((step.frame.code, step.frame.instr & 0xffff_ffff), (0xc0de_1000, 6), "3.{minor}");
            let step = walk.coroutine(sleeping).unwrap();
            assert_eq!((step.state, step.awaits), (GenState::Suspended, None), "3.{minor}: a future ends the chain");
            let step = walk.coroutine(running).unwrap();
            assert_eq!((step.state, step.awaits), (GenState::Executing, None), "3.{minor}");
            assert_eq!(walk.coroutine(done).unwrap().state, GenState::Finished, "3.{minor}");
        }
    }

    #[test]
    fn versions_and_frame_states() {
        let version = |minor| Version { major: 3, minor };
        assert!(AsyncioLayout::for_version(version(7)).unwrap_err().contains("3.8 to 3.15"));
        assert!(AsyncioLayout::for_version(version(16)).is_err());
        let state = |minor, raw| AsyncioLayout::for_version(version(minor)).unwrap().state(raw);
        assert_eq!(state(10, -1), GenState::Suspended);
        assert_eq!(state(10, 3), GenState::Finished);
        assert_eq!(state(11, -1), GenState::Suspended);
        assert_eq!(state(12, -2), GenState::Created);
        assert_eq!(state(13, -1), GenState::Suspended);
        assert_eq!(state(14, -3), GenState::Created);
        assert_eq!(state(14, 1), GenState::Finished);
        assert_eq!(state(15, 2), GenState::Suspended);
        assert_eq!(state(15, 4), GenState::Executing);
        assert_eq!(state(15, 5), GenState::Finished);
    }

    #[test]
    fn parses_the_asyncio_debug_table() {
        // The `.AsyncioDebug` sections of Debian's 3.15.2 (`python3.15`) and 3.14 (`_asyncio.cpython-314-…so`), as
        // `objdump -s -j .AsyncioDebug` shows them: TaskObj 168 bytes, task_name 136, awaited_by 96, is_task 108,
        // awaited_by_is_set 109, coro 128, node 152; the interpreter's size and tasks head; the thread state's size,
        // running loop, running task and tasks head.
        let table = words(&[168, 136, 96, 108, 109, 128, 152, 0x373c0, 0x2a68, 0x450, 0x400, 0x408, 0x418]);
        let debug = AsyncioDebug::parse(&table).unwrap();
        assert_eq!(
            debug,
            AsyncioDebug {
                task_name: 136,
                task_coro: 128,
                task_node: 152,
                interp_tasks_head: 0x2a68,
                thread_tasks_head: 0x418
            }
        );
        let table_3_14 = words(&[168, 136, 96, 108, 109, 128, 152, 0x37248, 0x2a80, 0x3a8, 0x360, 0x368, 0x370]);
        assert_eq!(
            AsyncioDebug::parse(&table_3_14).map(|d| (d.interp_tasks_head, d.thread_tasks_head)),
            Some((0x2a80, 0x370))
        );
        let adjusted = adjusted(&AsyncioLayout::for_version(Version { major: 3, minor: 15 }).unwrap(), Some(&debug));
        assert_eq!((adjusted.task_fut_waiter, adjusted.task_coro, adjusted.task_name), (120, 128, 136));
        // A field past its struct's size: not this table.
        let bad = words(&[168, 136, 96, 108, 109, 128, 160, 0x373c0, 0x2a68, 0x450, 0x400, 0x408, 0x418]);
        assert_eq!(AsyncioDebug::parse(&bad), None);
        assert_eq!(AsyncioDebug::parse(&table[..64]), None);
    }
}
