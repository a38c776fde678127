//! The liveness rule of the garbage-collection protocol (FORMAT.md section 21): when may a client
//! treat another client's backup session (or prune lease) as ended because its process is gone?
//!
//! Only on proof. A recorded process is proven gone when it ran in this very kernel instance
//! (the same boot id, which also identifies the machine: boot ids are random per boot, so two
//! machines, two clones of one image or two containers on different hosts never share one), in
//! the same PID namespace (containers on one host share the boot id but not the namespace), and
//! its pid is now absent or belongs to a process that started at another time (pid reuse).
//! A process from an earlier boot of this machine is gone too, but "this machine" is proven only
//! by the machine id *and* the session being listed in this machine's own local record of the
//! sessions it started (cloned images share a machine id). Short of proof, the session counts
//! as alive. The snapshot's host label plays no part.
//!
//! Pure: the caller reads `/proc` and its local record, and passes what it found.

pub use crate::format::lifecycle::ProcessPlace;

/// What the judging client knows about the place it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalPlace {
    /// This machine's id; zero when unknown.
    pub machine_id: [u8; 16],
    /// This boot's id; zero when unknown.
    pub boot_id: [u8; 16],
    /// This process's PID namespace inode; 0 when unknown.
    pub pid_namespace: u64,
}

impl LocalPlace {
    /// The place of a process running here (its pid and start time left out).
    pub fn of(place: &ProcessPlace) -> Self {
        Self {
            machine_id: place.machine_id,
            boot_id: place.boot_id,
            pid_namespace: place.pid_namespace,
        }
    }
}

/// What `/proc` says about the recorded pid, looked up by the caller only when the rule asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidProbe {
    /// No process has that pid.
    Absent,
    /// A process has that pid and started at these clock ticks after boot.
    Running {
        /// `/proc/PID/stat` field 22.
        start_ticks: u64,
    },
    /// A process has that pid, and its start time could not be read.
    Unreadable,
}

/// The rule's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Proven gone, for the reason given.
    Gone(GoneBecause),
    /// Not proven gone: treat as alive, for the reason given.
    Unproven(UnprovenBecause),
}

/// Why a process is proven gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneBecause {
    /// Same boot and namespace, and no process has its pid.
    PidAbsent,
    /// Same boot and namespace, and its pid belongs to a process that started at another time.
    PidReused,
    /// It ran on this machine (machine id, and listed in this machine's own record of the
    /// sessions it started) in an earlier boot.
    EarlierBoot,
}

/// Why a process is not proven gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnprovenBecause {
    /// The record or this client lacks a boot id, namespace or start time (an old marker, a
    /// system without `/proc`).
    Unrecorded,
    /// It runs (or ran) on another machine or in another boot that cannot be proven to be ours.
    ElsewhereOrUnknownBoot,
    /// Same boot, other PID namespace (another container, or the host seen from a container).
    OtherNamespace,
    /// Its pid is running with the recorded start time (or a start time that cannot be read).
    Running,
}

impl Liveness {
    /// Whether the process is proven gone.
    pub fn is_gone(self) -> bool {
        matches!(self, Self::Gone(_))
    }
}

const UNKNOWN_ID: [u8; 16] = [0; 16];

/// Judges a recorded process from the local place, whether this machine's own record lists the
/// session (`started_here`), and a pid probe the rule calls only when the answer depends on it.
pub fn judge(
    recorded: &ProcessPlace,
    local: &LocalPlace,
    started_here: bool,
    probe: impl FnOnce(u32) -> PidProbe,
) -> Liveness {
    let boot_known = recorded.boot_id != UNKNOWN_ID && local.boot_id != UNKNOWN_ID;
    if !boot_known {
        return Liveness::Unproven(UnprovenBecause::Unrecorded);
    }
    if recorded.boot_id != local.boot_id {
        let same_machine = recorded.machine_id != UNKNOWN_ID
            && recorded.machine_id == local.machine_id
            && started_here;
        return if same_machine {
            Liveness::Gone(GoneBecause::EarlierBoot)
        } else {
            Liveness::Unproven(UnprovenBecause::ElsewhereOrUnknownBoot)
        };
    }
    if recorded.pid_namespace == 0 || local.pid_namespace == 0 {
        return Liveness::Unproven(UnprovenBecause::Unrecorded);
    }
    if recorded.pid_namespace != local.pid_namespace {
        return Liveness::Unproven(UnprovenBecause::OtherNamespace);
    }
    match probe(recorded.pid) {
        PidProbe::Absent => Liveness::Gone(GoneBecause::PidAbsent),
        PidProbe::Running { start_ticks }
            if recorded.start_ticks != 0 && start_ticks != recorded.start_ticks =>
        {
            Liveness::Gone(GoneBecause::PidReused)
        }
        PidProbe::Running { .. } | PidProbe::Unreadable => {
            Liveness::Unproven(UnprovenBecause::Running)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: [u8; 16] = [1; 16];
    const OTHER_MACHINE: [u8; 16] = [2; 16];
    const BOOT: [u8; 16] = [3; 16];
    const OTHER_BOOT: [u8; 16] = [4; 16];

    fn recorded() -> ProcessPlace {
        ProcessPlace {
            machine_id: MACHINE,
            boot_id: BOOT,
            pid_namespace: 4_026_531_836,
            pid: 4242,
            start_ticks: 777,
        }
    }

    fn local() -> LocalPlace {
        LocalPlace {
            machine_id: MACHINE,
            boot_id: BOOT,
            pid_namespace: 4_026_531_836,
        }
    }

    fn never_probed(_: u32) -> PidProbe {
        panic!("the pid must not be probed here")
    }

    #[test]
    fn same_boot_and_namespace_and_pid_absent_is_gone() {
        let verdict = judge(&recorded(), &local(), false, |pid| {
            assert_eq!(pid, 4242);
            PidProbe::Absent
        });
        assert_eq!(verdict, Liveness::Gone(GoneBecause::PidAbsent));
    }

    #[test]
    fn a_reused_pid_is_gone_and_the_same_process_is_alive() {
        let reused = judge(&recorded(), &local(), false, |_| PidProbe::Running {
            start_ticks: 778,
        });
        assert_eq!(reused, Liveness::Gone(GoneBecause::PidReused));
        let same = judge(&recorded(), &local(), true, |_| PidProbe::Running {
            start_ticks: 777,
        });
        assert_eq!(same, Liveness::Unproven(UnprovenBecause::Running));
        let unreadable = judge(&recorded(), &local(), true, |_| PidProbe::Unreadable);
        assert!(!unreadable.is_gone());
    }

    #[test]
    fn another_namespace_is_never_gone_whatever_the_pid() {
        let mut other = local();
        other.pid_namespace += 1;
        let verdict = judge(&recorded(), &other, true, never_probed);
        assert_eq!(verdict, Liveness::Unproven(UnprovenBecause::OtherNamespace));
    }

    #[test]
    fn another_machine_with_the_same_host_label_is_never_gone() {
        // Two VPSs called "ubuntu": different boots, different machines.
        let elsewhere = LocalPlace {
            machine_id: OTHER_MACHINE,
            boot_id: OTHER_BOOT,
            pid_namespace: 4_026_531_836,
        };
        for started_here in [false, true] {
            let verdict = judge(&recorded(), &elsewhere, started_here, never_probed);
            assert_eq!(
                verdict,
                Liveness::Unproven(UnprovenBecause::ElsewhereOrUnknownBoot)
            );
        }
    }

    #[test]
    fn cloned_images_sharing_a_machine_id_are_not_gone_without_the_local_record() {
        let clone = LocalPlace {
            machine_id: MACHINE,
            boot_id: OTHER_BOOT,
            pid_namespace: 4_026_531_836,
        };
        let verdict = judge(&recorded(), &clone, false, never_probed);
        assert!(!verdict.is_gone());
        let rebooted_self = judge(&recorded(), &clone, true, never_probed);
        assert_eq!(rebooted_self, Liveness::Gone(GoneBecause::EarlierBoot));
    }

    #[test]
    fn unknown_fields_prove_nothing() {
        let mut old_marker = recorded();
        old_marker.boot_id = UNKNOWN_ID;
        assert!(!judge(&old_marker, &local(), true, never_probed).is_gone());

        let mut no_namespace = recorded();
        no_namespace.pid_namespace = 0;
        assert!(!judge(&no_namespace, &local(), true, never_probed).is_gone());

        // Without a recorded start time only an absent pid proves anything.
        let mut no_start = recorded();
        no_start.start_ticks = 0;
        let running = |_| PidProbe::Running { start_ticks: 9 };
        assert!(!judge(&no_start, &local(), true, running).is_gone());
        assert!(judge(&no_start, &local(), true, |_| PidProbe::Absent).is_gone());

        let mut no_machine = recorded();
        no_machine.machine_id = UNKNOWN_ID;
        no_machine.boot_id = OTHER_BOOT;
        assert!(!judge(&no_machine, &local(), true, never_probed).is_gone());

        let blind = LocalPlace::default();
        assert!(!judge(&recorded(), &blind, true, never_probed).is_gone());
    }
}
