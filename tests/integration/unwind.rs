//! Native unwinding through frames whose CFA is a DWARF expression: stack-realigning code (GCC's DRAP), which
//! framehop alone unwinds to a wrong stack pointer. The workload's stacks must reach `main` through that frame.
use std::{process::Command, time::Duration};

use profiler_tests::{
    compile_c, count_where, exclusive_cpu, is_truncation, profiler, require_root, run, workspace_root, Folded, Process,
    TestDir,
};

/// Of the workload's samples, at least this share must unwind to `main` through the realigned frame.
const THROUGH_SHARE: f64 = 0.99;

/// The frames the workload's busy thread runs in, root side first, from `main` to the realigned function.
const CHAIN: [&str; 3] = ["main", "run_loop", "realigned"];

#[test]
fn stacks_reach_main_through_a_frame_whose_cfa_is_an_expression() {
    if !require_root() {
        return;
    }
    let dir = TestDir::new("unwind-cfa-expression");
    let binary = dir.join("realign");
    compile_c(&["-fomit-frame-pointer"], &workspace_root().join("tests/workloads/unwind/realign.c"), &binary);
    assert_cfa_is_an_expression(&binary, "realigned");

    let _cpu = exclusive_cpu();
    let workload = Process::start(Command::new(&binary).arg("300"));
    let mut record = profiler();
    record.args(["record", "--pid", &workload.pid().to_string(), "--duration", "5s", "--rate", "200"]);
    record.arg("-o").arg(dir.join("out.folded"));
    let run = run(&mut record, Duration::from_secs(120));
    drop(workload);
    run.assert_success();
    eprintln!("realign:\n{}", run.stderr);

    let folded = Folded::read(&dir.join("out.folded"));
    let stacks = folded.thread("realign");
    let total: u64 = stacks.iter().map(|(_, count)| count).sum();
    assert!(total >= 100, "too few samples of the workload to measure: {total}\n{}", lines(&folded));

    // Reaching main: main → run_loop → realigned, adjacent, with realigned or its leaf on top and nothing cut.
    let through = count_where(&stacks, |frames| {
        let Some(at) = frames.windows(CHAIN.len()).position(|window| window == CHAIN) else { return false };
        let above = &frames[at + CHAIN.len()..];
        !frames.iter().any(|frame| is_truncation(frame)) && (above.is_empty() || above == ["hot_leaf"])
    });
    let share = through as f64 / total as f64;
    eprintln!("{through} of {total} samples ({:.1}%) reach main through realigned", 100.0 * share);
    assert!(
        share >= THROUGH_SHARE,
        "only {through} of {total} samples ({:.1}%, want ≥ {:.0}%) unwind to main through the realigned frame:\n{}",
        100.0 * share,
        100.0 * THROUGH_SHARE,
        lines(&folded)
    );
    // Both ways through the realigned frame were measured: as a caller (under hot_leaf) and as the sampled frame.
    let under_leaf = count_where(&stacks, |frames| frames.last().is_some_and(|f| f == "hot_leaf"));
    let as_leaf = count_where(&stacks, |frames| frames.last().is_some_and(|f| f == "realigned"));
    assert!(under_leaf > 0 && as_leaf > 0, "hot_leaf {under_leaf}, realigned {as_leaf} samples:\n{}", lines(&folded));
}

/// Checks the test's premise with binutils: the function's FDE defines the CFA with GCC's DRAP expression (were a
/// compiler to realign differently, the test would measure nothing).
fn assert_cfa_is_an_expression(binary: &std::path::Path, function: &str) {
    let output = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|err| panic!("could not run {cmd:?}: {err}"));
        assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8 output")
    };
    let symbols = output(Command::new("nm").arg(binary));
    let address = symbols
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.next()?;
            (fields.nth(1)? == function).then(|| u64::from_str_radix(address, 16).ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no symbol {function} in {}", binary.display()));
    let frames = output(Command::new("readelf").arg("--debug-dump=frames").arg(binary));
    // Each FDE is a header line `... FDE cie=... pc=START..END` followed by its instructions.
    let fde = frames
        .split("\n\n")
        .find(|block| {
            block.lines().next().and_then(|header| header.split_once(" pc=")).is_some_and(|(_, range)| {
                let (start, end) = range.trim().split_once("..").unwrap_or(("", ""));
                let parse = |hex: &str| u64::from_str_radix(hex, 16).ok();
                matches!((parse(start), parse(end)), (Some(s), Some(e)) if (s..e).contains(&address))
            })
        })
        .unwrap_or_else(|| panic!("no FDE covers {function} ({address:#x}) in {}", binary.display()));
    assert!(
        fde.contains("DW_CFA_def_cfa_expression (DW_OP_breg6 (rbp): -8; DW_OP_deref)"),
        "{function}'s CFA is not GCC's DRAP expression; its FDE:\n{fde}"
    );
}

fn lines(folded: &Folded) -> String {
    let mut stacks: Vec<_> = folded.stacks.iter().collect();
    stacks.sort_by_key(|stack| std::cmp::Reverse(stack.1));
    stacks.iter().take(20).map(|(frames, count)| format!("  {count:>5} {}\n", frames.join(";"))).collect()
}
