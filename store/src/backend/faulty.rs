//! A fault-injecting wrapper around any [`Backend`], for tests: fail the Nth request, or every
//! request from the Nth on, as a transient failure would.

use std::ops::{ControlFlow, Range};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{Backend, BackendError, ObjectInfo, Operation, PutMode, RequestStats, StagingFile};

/// Which requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPlan {
    /// Only the request with this index (counting from 0) fails.
    FailOnce(u64),
    /// Every request from this index on fails.
    FailFrom(u64),
}

/// A backend that fails requests according to a [`FaultPlan`].
#[derive(Debug)]
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: FaultPlan,
    requests: AtomicU64,
}

impl FaultyBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> Self {
        Self {
            inner,
            plan,
            requests: AtomicU64::new(0),
        }
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn gate(&self, operation: Operation, name: &str) -> Result<(), BackendError> {
        let index = self.requests.fetch_add(1, Ordering::SeqCst);
        let fail = match self.plan {
            FaultPlan::FailOnce(target) => index == target,
            FaultPlan::FailFrom(target) => index >= target,
        };
        if fail {
            return Err(BackendError::Failed {
                operation,
                name: name.to_owned(),
                source: format!("injected fault at request {index}").into(),
            });
        }
        Ok(())
    }
}

impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, name: &str, bytes: Bytes, mode: PutMode) -> Result<(), BackendError> {
        self.gate(Operation::Put, name)?;
        self.inner.put(name, bytes, mode)
    }

    fn put_pieces(
        &self,
        name: &str,
        pieces: Vec<Bytes>,
        mode: PutMode,
    ) -> Result<(), BackendError> {
        self.gate(Operation::Put, name)?;
        self.inner.put_pieces(name, pieces, mode)
    }

    fn get(&self, name: &str) -> Result<Bytes, BackendError> {
        self.gate(Operation::Get, name)?;
        self.inner.get(name)
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.gate(Operation::Get, name)?;
        self.inner.get_range(name, range)
    }

    fn get_range_pieces(
        &self,
        name: &str,
        range: Range<u64>,
        take: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), BackendError> {
        self.gate(Operation::Get, name)?;
        self.inner.get_range_pieces(name, range, take)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.gate(Operation::List, prefix)?;
        self.inner.list(prefix)
    }

    fn head(&self, name: &str) -> Result<Option<u64>, BackendError> {
        self.gate(Operation::Head, name)?;
        self.inner.head(name)
    }

    fn delete(&self, name: &str) -> Result<(), BackendError> {
        self.gate(Operation::Delete, name)?;
        self.inner.delete(name)
    }

    fn stats(&self) -> RequestStats {
        self.inner.stats()
    }

    fn staging_files(&self) -> Result<Vec<StagingFile>, BackendError> {
        self.gate(Operation::List, "staging files")?;
        self.inner.staging_files()
    }

    fn delete_staging_file(&self, file: &StagingFile) -> Result<bool, BackendError> {
        self.gate(Operation::Delete, &file.name)?;
        self.inner.delete_staging_file(file)
    }
}
