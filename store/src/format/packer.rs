//! Gathers sealed blobs of one type into packs of about the target size, and shuffles their
//! order within a pack so the layout does not reveal the order of chunk sizes in a file.
//!
//! Pure: no I/O; randomness comes from the caller's generator.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::crypto::id::BlobType;
use crate::format::pack::SealedBlob;

/// Blobs waiting to become one pack.
#[derive(Debug)]
pub struct Packer {
    blob_type: BlobType,
    target_size: usize,
    blobs: Vec<SealedBlob>,
    size: usize,
}

impl Packer {
    /// An empty packer for blobs of `blob_type`, closing packs at `target_size` bytes.
    pub fn new(blob_type: BlobType, target_size: usize) -> Self {
        Self {
            blob_type,
            target_size,
            blobs: Vec::new(),
            size: 0,
        }
    }

    /// Adds a blob; returns `true` when the pack has reached its target size and should be taken.
    ///
    /// # Panics
    /// If the blob's type differs from the packer's (data and tree blobs never share a pack).
    pub fn push(&mut self, blob: SealedBlob) -> bool {
        assert_eq!(blob.blob_type, self.blob_type, "one blob type per pack");
        self.size += blob.sealed.len();
        self.blobs.push(blob);
        self.size >= self.target_size
    }

    /// Whether no blob is waiting.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Takes the waiting blobs in a random order, leaving the packer empty.
    pub fn take_shuffled<R: Rng>(&mut self, rng: &mut R) -> Vec<SealedBlob> {
        let mut blobs = std::mem::take(&mut self.blobs);
        self.size = 0;
        blobs.shuffle(rng);
        blobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::id::Id;
    use rand::SeedableRng;

    fn blob(index: u8, length: usize) -> SealedBlob {
        SealedBlob {
            blob_type: BlobType::Data,
            id: Id([index; 32]),
            raw_length: 0,
            sealed: vec![0; length],
        }
    }

    #[test]
    fn closes_at_target_and_shuffles() {
        let mut packer = Packer::new(BlobType::Data, 1000);
        for index in 0..9 {
            assert!(!packer.push(blob(index, 100)));
        }
        assert!(packer.push(blob(9, 100)));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let order: Vec<u8> = packer
            .take_shuffled(&mut rng)
            .iter()
            .map(|blob| blob.id.0[0])
            .collect();
        assert!(packer.is_empty());
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<u8>>());
        assert_ne!(order, sorted, "order should be shuffled");
    }
}
