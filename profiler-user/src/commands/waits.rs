//! The end-of-recording lines about waiting, printed when an off-CPU or wall-clock profile was made: off-CPU time
//! by reason, each thread's wait for the GIL, and the stacks that held the GIL while others waited for it.
use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write},
};

use crate::aggregate::{label_value, FrameKind, Profile, ProfileKind};

const TOP: usize = 5;

/// Writes the waits summary from `profiles` (nothing without an off-CPU or wall-clock one).
pub(crate) fn print(out: &mut impl Write, profiles: &[Profile]) -> io::Result<()> {
    let waits = profiles
        .iter()
        .find(|p| p.kind == ProfileKind::OffCpu)
        .or_else(|| profiles.iter().find(|p| p.kind == ProfileKind::Wall));
    let Some(waits) = waits else { return Ok(()) };
    let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    // (thread name, thread id) → (GIL wait, all off-CPU time), in ns.
    let mut by_thread: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for stack in &waits.stacks {
        let Some(reason) = label_value(&stack.labels, "wait") else { continue };
        let ns = stack.count.saturating_mul(waits.period);
        *by_reason.entry(reason).or_default() += ns;
        let thread = (
            label_value(&stack.labels, "thread_name").unwrap_or("?"),
            label_value(&stack.labels, "thread_id").unwrap_or("?"),
        );
        let entry = by_thread.entry(thread).or_default();
        entry.1 += ns;
        if reason == "gil" {
            entry.0 += ns;
        }
    }
    let off_cpu: u64 = by_reason.values().sum();
    if off_cpu == 0 {
        return writeln!(out, "off-CPU: no target thread waited while recording");
    }
    let mut reasons: Vec<(&str, u64)> = by_reason.into_iter().collect();
    reasons.sort_by_key(|&(_, ns)| std::cmp::Reverse(ns));
    let shares: Vec<String> =
        reasons.iter().map(|(reason, ns)| format!("{reason} {:.0}%", 100.0 * *ns as f64 / off_cpu as f64)).collect();
    writeln!(out, "off-CPU: {:.1} s waiting in all threads: {}", secs(off_cpu), shares.join(", "))?;

    let gil_waiters: Vec<_> = by_thread.iter().filter(|(_, (gil, _))| *gil > 0).collect();
    if !gil_waiters.is_empty() {
        writeln!(out, "GIL wait per thread:")?;
        for ((name, tid), (gil, all)) in gil_waiters {
            writeln!(
                out,
                "  {:>7.2} s  {name} ({tid}), {:.0}% of its off-CPU time",
                secs(*gil),
                100.0 * *gil as f64 / (*all).max(1) as f64
            )?;
        }
    }
    if let Some(cpu) = profiles.iter().find(|p| p.kind == ProfileKind::Cpu) {
        print_contended_holders(out, cpu)?;
    }
    Ok(())
}

/// The CPU samples of threads holding the GIL while others waited for it (`gil_waiters` label), by the innermost
/// function (Python first: that is the code to change).
fn print_contended_holders(out: &mut impl Write, cpu: &Profile) -> io::Result<()> {
    let mut by_function: HashMap<String, u64> = HashMap::new();
    let mut contended = 0u64;
    for stack in cpu.stacks.iter().filter(|s| label_value(&s.labels, "gil_waiters").is_some()) {
        contended += stack.count;
        let frames = || stack.frames.iter().map(|&id| cpu.frame(id)).filter(|f| f.kind != FrameKind::Context);
        let leaf = frames().find(|f| f.kind == FrameKind::Python).or_else(|| frames().next());
        let name = leaf.map_or_else(|| "[unknown]".to_owned(), |f| f.function.to_string());
        *by_function.entry(name).or_default() += stack.count;
    }
    if contended == 0 {
        return Ok(());
    }
    writeln!(
        out,
        "GIL held while other threads waited for it: {contended} samples ({:.1} s); the top stacks holding it:",
        secs(contended.saturating_mul(cpu.period))
    )?;
    let mut ranked: Vec<(String, u64)> = by_function.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (name, count) in ranked.into_iter().take(TOP) {
        writeln!(out, "  {:5.1}%  {count:>7}  {name}", 100.0 * count as f64 / contended as f64)?;
    }
    Ok(())
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregator, Frame, Label, LabelValue};

    fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
        pairs.iter().map(|&(key, value)| Label { key, value: LabelValue::Str(value.into()) }).collect()
    }

    #[test]
    fn summarizes_waits_by_reason_thread_and_contended_holder() {
        let mut off = Aggregator::of_kind(ProfileKind::OffCpu, 1);
        let take_gil = Frame::native("take_gil");
        off.add_weighted(
            [&take_gil],
            labels(&[("wait", "gil"), ("thread_name", "worker"), ("thread_id", "8")]),
            3_000_000_000,
        );
        off.add_weighted(
            [&take_gil],
            labels(&[("wait", "io"), ("thread_name", "worker"), ("thread_id", "8")]),
            1_000_000_000,
        );
        let mut cpu = Aggregator::new(10_000_000);
        let mut hot = Frame::native("crunch");
        hot.kind = FrameKind::Python;
        for _ in 0..30 {
            cpu.add([&hot], labels(&[("gil", "held"), ("gil_waiters", "1")]));
        }
        cpu.add([&hot], labels(&[("gil", "held")]));
        let mut text = Vec::new();
        print(&mut text, &[cpu.take(), off.take()]).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("off-CPU: 4.0 s waiting in all threads: gil 75%, io 25%"), "{text}");
        assert!(text.contains("3.00 s  worker (8), 75% of its off-CPU time"), "{text}");
        assert!(text.contains("30 samples (0.3 s)"), "{text}");
        assert!(text.contains("100.0%       30  crunch"), "{text}");
    }

    #[test]
    fn nothing_without_an_off_cpu_profile() {
        let mut text = Vec::new();
        print(&mut text, &[Aggregator::new(1).take()]).unwrap();
        assert!(text.is_empty());
    }
}
