//! Making Debian 12's User-Mode Linux (6.1) boot on hosts with AVX-512 or
//! AMX.
//!
//! UML 6.1 saves and restores its processes' FPU state with
//! `PTRACE_GETREGSET`/`PTRACE_SETREGSET` of `NT_X86_XSTATE` and a buffer of
//! the fixed size `sizeof(struct _xstate)` (832 bytes: x87/SSE, the XSAVE
//! header and the AVX upper halves). The host kernel reads a short buffer
//! fine, but `SETREGSET` wants the host's whole XSAVE size and fails with
//! EFAULT otherwise; on a CPU whose enabled XSAVE features need more (AVX-512:
//! 2,696 bytes and up, AMX: about 11 KB) the first process UML starts dies
//! with "userspace - ptrace set fp regs failed, errno = 14" and the kernel
//! panics ("Attempted to kill init"). Later kernels size the buffer from the
//! host; Debian 12 has 6.1 only.
//!
//! UML falls back to `PTRACE_GETFPREGS`/`SETFPREGS` (the 512-byte FXSAVE area:
//! x87 and SSE, which the host accepts at any XSAVE size) when its probe of
//! `GETREGSET NT_X86_XSTATE` at boot fails. [`prepare`] makes that probe fail:
//! it installs a seccomp filter in the launched process (inherited by UML
//! and its helper processes, kept across exec) that answers exactly
//! `ptrace(PTRACE_GETREGSET | PTRACE_SETREGSET, _, NT_X86_XSTATE, _)` with
//! EIO and lets every other system call through. Only where the host needs
//! it: with the host's XSAVE size at 832 bytes or less the filter is not
//! installed and UML runs as it always did.
//!
//! The fallback does not keep the AVX and AVX-512 registers of guest
//! processes: measured here, python3 inside UML dies at start ("Fatal
//! Python error: error evaluating path") when glibc's AVX string functions
//! run. So the guest's glibc is told not to use them: [`prepare`] adds
//! `GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,...` to the kernel command line,
//! which UML passes to PID 1's environment (shell inits pass it on), and
//! `systemd.setenv=` of the same for the units of a systemd init. The
//! programs in these tests (chronyd, ntpdig, timectl built for the x86-64
//! baseline) then keep their floating point in SSE registers, which the
//! fallback saves; the tests compare their figures with a reference run, so
//! a corruption would show.

use std::process::Command;

/// `sizeof(struct _xstate)` on x86-64: what UML 6.1's buffer holds.
const UML_XSTATE_BYTES: u32 = 832;

/// The host's XSAVE size for the features the kernel enabled (CPUID leaf
/// 0xD, sub-leaf 0, EBX), or None off x86-64.
pub fn host_xstate_bytes() -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaf 0xD exists on every CPU with XSAVE and reads as zeros
        // otherwise.
        let leaf = std::arch::x86_64::__cpuid_count(0xD, 0);
        Some(leaf.ebx)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether UML 6.1 needs the fallback on this host.
pub fn needs_fallback() -> bool {
    host_xstate_bytes().is_some_and(|n| n > UML_XSTATE_BYTES)
}

/// glibc's CPU features the guest must not use under the fallback.
const GUEST_TUNABLES: &str = "glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-FMA,-AVX_Fast_Unaligned_Load";

/// Prepare `cmd`, which starts linux.uml (directly or through `ip netns
/// exec` and `setpriv`) and already holds UML's other kernel arguments,
/// to run on this host: when the host's XSAVE area is larger than UML's
/// buffer, installs the seccomp filter described above and appends the
/// guest's glibc tunables to the kernel command line (for PID 1, and
/// through `systemd.setenv=` for the units of a systemd init). Nothing
/// otherwise.
pub fn prepare(cmd: &mut Command) {
    if !needs_fallback() {
        return;
    }
    cmd.arg(format!("GLIBC_TUNABLES={GUEST_TUNABLES}"))
        .arg(format!("systemd.setenv=GLIBC_TUNABLES={GUEST_TUNABLES}"));
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; it only
    // makes two prctl calls on data it owns (no allocation, no locks).
    unsafe {
        cmd.pre_exec(|| {
            install_filter();
            Ok(())
        });
    }
}

#[cfg(target_arch = "x86_64")]
fn install_filter() {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const NR_PTRACE: u32 = 101;
    const PTRACE_GETREGSET: u32 = 0x4204;
    const PTRACE_SETREGSET: u32 = 0x4205;
    const NT_X86_XSTATE: u32 = 0x202;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO_EIO: u32 = 0x0005_0000 | libc::EIO as u32;
    // struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (the low
    // 32 bits first on little-endian x86-64).
    let ld = |offset: u32| libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: offset,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ret = |k: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let program = [
        ld(4),                        // 0: arch
        jeq(AUDIT_ARCH_X86_64, 0, 7), // 1: else allow (9)
        ld(0),                        // 2: syscall number
        jeq(NR_PTRACE, 0, 5),         // 3: else allow
        ld(16),                       // 4: request
        jeq(PTRACE_GETREGSET, 1, 0),  // 5: to 7
        jeq(PTRACE_SETREGSET, 0, 2),  // 6: else allow
        ld(32),                       // 7: the regset type
        jeq(NT_X86_XSTATE, 1, 0),     // 8: to 10, else allow
        ret(RET_ALLOW),               // 9
        ret(RET_ERRNO_EIO),           // 10
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with a pointer to a filter program that lives until the
    // call returns (the kernel copies it). Failing here leaves UML without
    // the fallback; its console then shows the panic the filter prevents.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn install_filter() {}
