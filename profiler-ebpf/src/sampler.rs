//! The CPU sampler: a perf_event (cpu-clock) program run on every CPU at the sampling rate.
//!
//! For a target thread it sends the user registers and a copy of the top of the user stack, so userspace can
//! unwind with DWARF CFI (the target needs no frame pointers).
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user_buf,
        generated::{bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_task_pt_regs},
    },
    macros::perf_event,
    programs::{PerfEventContext, tracing::StackIdContext as _},
};
use profiler_common::{
    FLAG_KERNEL_STACK, FLAG_USER_MODE, KIND_CPU, STACK_CHUNK, STACK_CHUNKS, SampleRecord, SamplerConfig, UserRegs,
};

use crate::maps::{KERNEL_STACKS, LOST_SAMPLES, SAMPLES, TARGETS};

/// Written by userspace before load (aya `EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static SAMPLER_CONFIG: SamplerConfig = SamplerConfig { kernel_stacks: 0, _reserved: 0 };

#[perf_event]
pub fn sample_cpu(ctx: PerfEventContext) -> u32 {
    try_sample_cpu(&ctx);
    0
}

fn try_sample_cpu(ctx: &PerfEventContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if unsafe { TARGETS.get(&tgid) }.is_none() {
        return;
    }

    let Some(mut entry) = SAMPLES.reserve::<SampleRecord>(0) else {
        count_lost();
        return;
    };
    let record = entry.as_mut_ptr();

    // The interrupted context says whether the tick hit user mode; the task's saved registers are the user ones
    // either way (on kernel entry they are saved at the top of the kernel stack).
    let interrupted_cs = unsafe { (*ctx.ctx).regs.cs };
    let user_regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    let regs = unsafe {
        UserRegs {
            ip: bpf_probe_read_kernel(&(*user_regs).rip).unwrap_or(0),
            sp: bpf_probe_read_kernel(&(*user_regs).rsp).unwrap_or(0),
            bp: bpf_probe_read_kernel(&(*user_regs).rbp).unwrap_or(0),
        }
    };

    let config = unsafe { core::ptr::read_volatile(&SAMPLER_CONFIG) };
    let mut flags = if interrupted_cs & 3 == 3 { FLAG_USER_MODE } else { 0 };
    let mut kernel_stack_id = -1i64;
    if config.kernel_stacks != 0 {
        if let Ok(id) = ctx.get_stackid(&KERNEL_STACKS, 0) {
            kernel_stack_id = id;
            flags |= FLAG_KERNEL_STACK;
        }
    }

    let stack_base = regs.sp & !(STACK_CHUNK as u64 - 1);
    let mut stack_len = 0u32;
    unsafe {
        let stack = &mut (*record).stack;
        for chunk in 0..STACK_CHUNKS {
            let offset = chunk * STACK_CHUNK;
            let dst = &mut stack[offset..offset + STACK_CHUNK];
            let src = (stack_base + offset as u64) as *const u8;
            if regs.sp == 0 || bpf_probe_read_user_buf(src, dst).is_err() {
                break;
            }
            stack_len += STACK_CHUNK as u32;
        }

        let (py_frame_count, py_flags) = crate::python::capture(tgid, pid_tgid as u32, &mut (*record).py_frames);

        let header = &mut (*record).header;
        header.kind = KIND_CPU;
        header.cpu = bpf_get_smp_processor_id();
        header.pid = tgid;
        header.tid = pid_tgid as u32;
        header.time_ns = bpf_ktime_get_ns();
        header.regs = regs;
        header.stack_base = stack_base;
        header.stack_len = stack_len;
        header.flags = flags;
        header.kernel_stack_id = kernel_stack_id;
        header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
        header.py_frame_count = py_frame_count;
        header.py_flags = py_flags;
    }
    entry.submit(0);
}

fn count_lost() {
    if let Some(counter) = LOST_SAMPLES.get_ptr_mut(0) {
        unsafe { *counter += 1 };
    }
}
