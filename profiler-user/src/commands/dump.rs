//! `profiler dump`: every thread's native and Python stack now, for a process that hangs, without stopping it.
//!
//! The same start-up as `record` (preflight, targets, privileges, the sampler on the targets), then: the threads
//! blocked in the kernel are read from /proc and memory (`dump::snapshot`) and unwound by the pipeline like a
//! sample; the threads on a CPU are sampled for `--sample-for` and shown with their most frequent stack. With
//! `--name`, every matching process is dumped, one after the other.
use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use tokio::time::Instant;

use super::attach::{self, NoMatchYet, Prepared};
use crate::{
    aggregate::{FrameKind, LabelValue, Profile},
    cli::{AttachConfig, DumpConfig},
    crash::{report::ReportFrame, rfc3339_now},
    dump::{
        self,
        report::{describe_place, describe_truncation, DumpReport, ThreadDump},
        Place, ProcessSnapshot, ThreadSnapshot,
    },
    pipeline::{Pipeline, PipelineOptions},
    privilege,
    process::{task, Process},
    python::{detect, thread_names, threads as py_threads},
    session::Wake,
};

/// Sampling rate of the burst: the highest `record` allows, so a short burst still has a clear majority stack.
const BURST_RATE_HZ: u64 = 1000;
const TICK: Duration = Duration::from_millis(50);

pub(crate) fn run(config: DumpConfig) -> Result<()> {
    let attach_config = AttachConfig {
        target: config.target.clone(),
        follow_children: false,
        rate_hz: BURST_RATE_HZ,
        kernel_stacks: false,
        pipeline: PipelineOptions::default(),
        labels: Default::default(),
        crash_dir: PathBuf::new(),
        // A dump is read at once: a debug file fetched meanwhile would come too late.
        debuginfod: None,
    };
    let needs = privilege::Needs { kernel_symbols: false, write_as_caller: false };
    let (prepared, ()) = attach::prepare(&attach_config, needs, NoMatchYet::Fail, || Ok(()))?;
    for target in &prepared.targets {
        check_python(target);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let reports = runtime.block_on(dump_all(&config, &attach_config, &prepared))?;
    if config.json {
        println!("{}", serde_json::to_string_pretty(&reports).context("writing JSON")?);
    } else {
        let texts: Vec<String> = reports.iter().map(DumpReport::to_text).collect();
        print!("{}", texts.join("\n"));
    }
    Ok(())
}

/// Says once when a target's threads will have native frames only: it runs no Python, or a Python whose threads
/// cannot be read. A hung native process is dumped all the same.
fn check_python(target: &Process) {
    match detect::detect(target.pid, &mut detect::InterpreterFiles::default()) {
        Ok(Some(_)) => {}
        Ok(None) => tracing::info!("PID {} ({}) runs no Python: native stacks only", target.pid, target.name),
        Err(err) => tracing::warn!(
            "PID {} ({}) runs a Python whose threads cannot be read, native stacks only: {err:#}",
            target.pid,
            target.name
        ),
    }
}

async fn dump_all(config: &DumpConfig, attach_config: &AttachConfig, prepared: &Prepared) -> Result<Vec<DumpReport>> {
    // The sampler runs on the targets from here on; only the samples of threads found on a CPU are used.
    let mut session = attach::attach(attach_config, prepared, TICK).await?;
    let snapshots: Vec<(&Process, ProcessSnapshot)> = prepared
        .targets
        .iter()
        .map(|target| {
            let interpreter = session.pipeline.python_interpreter(target.pid);
            let layout = interpreter.as_ref().map(|i| i.layouts.kernel);
            let tids = match &interpreter {
                Some(interpreter) if py_threads::by_pthread_id(&interpreter.layouts.kernel) => {
                    thread_names::tids_by_ident(target.pid, interpreter)
                }
                _ => Default::default(),
            };
            (target, dump::snapshot(target.pid, layout.as_ref(), &tids))
        })
        .collect();
    // The tasks right after the threads: both are read from the running process, a moment apart.
    let tasks: Vec<_> = snapshots.iter().map(|(target, _)| session.pipeline.asyncio_tasks(target.pid)).collect();
    let any_running = snapshots.iter().flat_map(|(_, s)| &s.threads).any(|t| t.place == Place::Running);
    if any_running {
        let deadline = Instant::now() + config.sample_for;
        loop {
            match session.wait(Some(deadline)).await? {
                Wake::Tick => continue,
                Wake::Deadline => break,
                Wake::Stop => bail!("interrupted"),
            }
        }
    }
    for (target, _) in &snapshots {
        session.remove_target(target.pid);
    }
    session.drain();
    let profile = session.pipeline.take_profile();
    let burst_ms = if any_running { config.sample_for.as_millis() as u64 } else { 0 };
    Ok(snapshots
        .into_iter()
        .zip(tasks)
        .map(|((target, snapshot), tasks)| {
            let mut report = report(&mut session.pipeline, target, snapshot, &profile, burst_ms);
            report.asyncio = tasks.tasks;
            report.asyncio_note = tasks.note;
            report
        })
        .collect())
}

fn report(
    pipeline: &mut Pipeline,
    target: &Process,
    snapshot: ProcessSnapshot,
    profile: &Profile,
    burst_ms: u64,
) -> DumpReport {
    let mut threads: Vec<ThreadDump> =
        snapshot.threads.iter().map(|thread| thread_dump(pipeline, target.pid, thread, profile)).collect();
    for unmatched in &snapshot.unmatched_python {
        threads.push(ThreadDump {
            tid: None,
            name: format!("Python thread {:#x}", unmatched.thread_id),
            state: "python-only",
            description: "a Python thread state no kernel thread was matched to (its thread just ended, or, on \
                          3.8–3.10, which know threads by pthread id only, `threading` does not know it)"
                .into(),
            syscall: None,
            syscall_name: None,
            scheduler_state: None,
            wait_channel: None,
            holds_gil: Some(unmatched.holds_gil),
            samples: None,
            samples_of_stack: None,
            moved_while_read: false,
            native_truncated: None,
            stack: Vec::new(),
        });
    }
    DumpReport {
        time: rfc3339_now(),
        pid: target.pid,
        process_name: target.name.clone(),
        python_version: pipeline.python_interpreter(target.pid).map(|i| i.version.to_string()),
        gil_known: snapshot.gil_known,
        gil_holder: snapshot.gil_holder,
        burst_ms,
        python_error: snapshot.python_error,
        threads,
        asyncio: None,
        asyncio_note: None,
    }
}

fn thread_dump(pipeline: &mut Pipeline, pid: u32, thread: &ThreadSnapshot, profile: &Profile) -> ThreadDump {
    // A free-threaded Python has no GIL to hold: no state rather than "not held".
    let mut holds_gil = thread.python.as_ref().map(|p| p.holds_gil).filter(|_| pipeline.has_gil(pid));
    let mut sampled = None;
    let mut native_truncated = None;
    let stack = match thread.place {
        Place::Blocked { .. } => {
            let sample = thread.as_sample(pid).expect("a blocked thread");
            let (frames, truncation) = pipeline.snapshot_stack(&sample);
            native_truncated = truncation.map(|t| describe_truncation(t).to_owned());
            frames.iter().filter(|f| f.kind != FrameKind::Context).map(ReportFrame::from_frame).collect()
        }
        Place::Running => match most_frequent_stack(profile, thread.tid) {
            Some(best) => {
                sampled = Some((best.samples, best.of_stack));
                if best.gil.is_some() {
                    holds_gil = best.gil;
                }
                best.frames
            }
            None => Vec::new(),
        },
        Place::Gone => Vec::new(),
    };
    let (state, description) = describe_place(&thread.place, sampled);
    let (syscall, moved) = match thread.place {
        Place::Blocked { syscall, moved, .. } => (syscall, moved),
        _ => (None, false),
    };
    ThreadDump {
        tid: Some(thread.tid),
        name: pipeline.name_thread(pid, thread.tid, &thread.name, false),
        state,
        description,
        syscall,
        syscall_name: syscall.and_then(task::syscall_name),
        scheduler_state: thread.scheduler_state.map(String::from),
        wait_channel: thread.wait_channel.clone(),
        holds_gil,
        samples: sampled.map(|(samples, _)| samples),
        samples_of_stack: sampled.map(|(_, of_stack)| of_stack),
        moved_while_read: moved,
        native_truncated,
        stack,
    }
}

/// A running thread's most frequent stack in the burst.
struct SampledStack {
    samples: u64,
    of_stack: u64,
    gil: Option<bool>,
    frames: Vec<ReportFrame>,
}

fn most_frequent_stack(profile: &Profile, tid: u32) -> Option<SampledStack> {
    let tid = LabelValue::Str(tid.to_string());
    let of_thread: Vec<_> = profile
        .stacks
        .iter()
        .filter(|stack| stack.labels.iter().any(|label| label.key == "thread_id" && label.value == tid))
        .collect();
    let best = of_thread.iter().max_by_key(|stack| stack.count)?;
    let gil =
        best.labels.iter().find(|label| label.key == "gil").map(|label| label.value == LabelValue::Str("held".into()));
    Some(SampledStack {
        samples: of_thread.iter().map(|stack| stack.count).sum(),
        of_stack: best.count,
        gil,
        frames: best
            .frames
            .iter()
            .map(|&id| profile.frame(id))
            .filter(|frame| frame.kind != FrameKind::Context)
            .map(ReportFrame::from_frame)
            .collect(),
    })
}
