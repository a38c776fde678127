//! The simulated machines: machine ids, boots, host names, PID namespaces (the host's and
//! containers'), processes with pids and start times, pid reuse, reboots, and each
//! installation's local record of the sessions it started. Plus the seeded generator every
//! choice of a schedule comes from.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::liveness::{LocalPlace, PidProbe, ProcessPlace};

use super::store::SessionId;

/// `SplitMix64`: a tiny seeded generator whose sequence never changes with a dependency's
/// version, so a seed replays the same schedule forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next_u64() % bound as u64).expect("below a usize bound")
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.next_u64() % 1000 < u64::from(per_mille)
    }

    /// 16 random bytes, never all zero (zero means "unknown" in a marker).
    pub fn id16(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        id[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        id[0] |= 1;
        id
    }
}

/// The initial PID namespace's inode: the same on every Linux machine and boot, so a namespace
/// inode alone never tells two machines apart.
pub const HOST_NAMESPACE: u64 = 4_026_531_836;

/// Pids are handed out from a small range so that they are reused often.
const FIRST_PID: u32 = 100;
const PID_SPAN: u32 = 6;

/// A PID namespace: the host's or a container's. Each has its own cairn installation (cache
/// directory), hence its own local record of the sessions it started.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// The namespace's inode in the current boot.
    pub inode: u64,
    /// Running processes: pid to start ticks.
    pub processes: BTreeMap<u32, u64>,
    next_pid: u32,
    /// The sessions this installation started: a file, so it survives reboots and is copied
    /// with a cloned disk.
    pub local_record: BTreeSet<SessionId>,
    container: bool,
}

/// A machine (a VPS, a server, a VM).
#[derive(Debug, Clone)]
pub struct Machine {
    /// The kernel's host name; several machines may share one.
    pub hostname: &'static str,
    /// `/etc/machine-id`.
    pub machine_id: [u8; 16],
    /// The current boot's id.
    pub boot_id: [u8; 16],
    /// How many times it booted (a process's boot epoch).
    pub boots: u32,
    /// The step at which the current boot began (ticks count from there).
    booted_at: u64,
    /// Its PID namespaces: index 0 is the host's, the others containers.
    pub namespaces: Vec<Namespace>,
    /// Whether the machine exists yet (a clone appears during the schedule).
    pub up: bool,
}

/// Where a simulated process runs and who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// Index of its machine.
    pub machine: usize,
    /// Index of its namespace on that machine.
    pub namespace: usize,
    /// Its pid in that namespace.
    pub pid: u32,
    /// Its start time in ticks after boot.
    pub start_ticks: u64,
    /// The machine's boot count when it started.
    pub boot: u32,
}

impl Machine {
    /// A machine with the host's namespace and `containers` containers, booted at `now`.
    pub fn new(hostname: &'static str, containers: usize, rng: &mut Rng, now: u64) -> Self {
        let mut namespaces = vec![Namespace {
            inode: HOST_NAMESPACE,
            processes: BTreeMap::new(),
            next_pid: FIRST_PID,
            local_record: BTreeSet::new(),
            container: false,
        }];
        for index in 1..=containers {
            namespaces.push(Namespace {
                inode: container_inode(rng, index),
                processes: BTreeMap::new(),
                next_pid: FIRST_PID,
                local_record: BTreeSet::new(),
                container: true,
            });
        }
        Self {
            hostname,
            machine_id: rng.id16(),
            boot_id: rng.id16(),
            boots: 1,
            booted_at: now,
            namespaces,
            up: true,
        }
    }

    /// Reboots: a new boot id, new container namespaces, every process gone, pids from the
    /// start again. Local records survive (they are files).
    pub fn reboot(&mut self, rng: &mut Rng, now: u64) {
        self.boot_id = rng.id16();
        self.boots += 1;
        self.booted_at = now;
        for (index, namespace) in self.namespaces.iter_mut().enumerate() {
            namespace.processes.clear();
            namespace.next_pid = FIRST_PID;
            if namespace.container {
                namespace.inode = container_inode(rng, index);
            }
        }
    }

    /// A copy of this machine's disk booted elsewhere: the same machine id and local records, a
    /// new boot, no processes.
    #[must_use]
    pub fn clone_image(&self, rng: &mut Rng, now: u64) -> Self {
        let mut copy = self.clone();
        copy.reboot(rng, now);
        copy.boots = 1;
        copy
    }

    /// Starts a process in `namespace` at step `now`, reusing the lowest free pid after the last
    /// one handed out (as Linux does, on a tiny scale).
    pub fn spawn(&mut self, machine: usize, namespace: usize, now: u64) -> Process {
        let start_ticks = now - self.booted_at + 1;
        let boot = self.boots;
        let space = &mut self.namespaces[namespace];
        let mut pid = space.next_pid;
        while space.processes.contains_key(&pid) {
            pid = next_pid(pid, space.processes.len());
        }
        space.next_pid = next_pid(pid, space.processes.len());
        space.processes.insert(pid, start_ticks);
        Process {
            machine,
            namespace,
            pid,
            start_ticks,
            boot,
        }
    }

    /// Whether `process` still runs.
    pub fn runs(&self, process: &Process) -> bool {
        self.up
            && process.boot == self.boots
            && self.namespaces[process.namespace]
                .processes
                .get(&process.pid)
                .is_some_and(|start| *start == process.start_ticks)
    }

    /// Ends `process` (exit or crash).
    pub fn end(&mut self, process: &Process) {
        if self.runs(process) {
            self.namespaces[process.namespace]
                .processes
                .remove(&process.pid);
        }
    }

    /// Where `process` runs, as its marker records it.
    pub fn place(&self, process: &Process) -> ProcessPlace {
        ProcessPlace {
            machine_id: self.machine_id,
            boot_id: self.boot_id,
            pid_namespace: self.namespaces[process.namespace].inode,
            pid: process.pid,
            start_ticks: process.start_ticks,
        }
    }

    /// What a process in `namespace` knows of its own place.
    pub fn local(&self, namespace: usize) -> LocalPlace {
        LocalPlace {
            machine_id: self.machine_id,
            boot_id: self.boot_id,
            pid_namespace: self.namespaces[namespace].inode,
        }
    }

    /// What `/proc` in `namespace` says about `pid`.
    pub fn probe(&self, namespace: usize, pid: u32) -> PidProbe {
        self.namespaces[namespace]
            .processes
            .get(&pid)
            .map_or(PidProbe::Absent, |start_ticks| PidProbe::Running {
                start_ticks: *start_ticks,
            })
    }
}

/// A container's namespace inode: distinct from the others on its machine in one boot (the
/// kernel's guarantee), often equal to another machine's or another boot's.
fn container_inode(rng: &mut Rng, index: usize) -> u64 {
    HOST_NAMESPACE + index as u64 + 16 * (rng.next_u64() % 4)
}

fn next_pid(pid: u32, running: usize) -> u32 {
    // Widen the range when it is full, so a spawn always finds a pid.
    let span = PID_SPAN.max(u32::try_from(running).unwrap_or(u32::MAX).saturating_add(1));
    FIRST_PID + (pid + 1 - FIRST_PID) % span
}
