//! Buffers of weights in transparent huge pages, where the system grants
//! them on request (`MADV_HUGEPAGE`; Linux's default mode, `madvise`,
//! gives huge pages to no other memory).
//!
//! At batch 1 the layers stream their weights from beyond L2 on every
//! pass, 4 KiB page after page, each a page walk: in 2 MiB pages
//! ResNet-18 ran 5 to 8% faster and ResNet-50 2 to 4% (alternated runs),
//! ResNet-18's Winograd layers at 7x7 2.2-2.6 -> 1.9-2.0 ms, ResNet-50's
//! at 14x14 2.3-2.5 -> 2.1-2.25 ms, its strided 3x3 layer into 7x7
//! 0.90-0.98 -> 0.80-0.83 ms and its NCHW layers at 7x7 5 to 9% faster.
//!
//! A weight read from a file, or drawn, lands in one of these too before
//! the kernels pack it. Every buffer from 128 KiB up is a mapping of its
//! own, which goes back to the system when dropped, where the heap kept
//! the space its blocks had freed: ResNet-18's peak resident size 100.3 ->
//! 93.1 MB when the buffers of a huge page and more moved out of the heap,
//! then ResNet-50's 133.6 -> 130.1 MB (ResNet-18's 92.6) when the smaller
//! ones followed.

use memmap2::{Advice, MmapMut};
use std::ops::{Deref, DerefMut};

/// A huge page's bytes: smaller buffers are not asked for them, since
/// they would never fill one.
const HUGE_PAGE: usize = 2 << 20;

/// The bytes from which a buffer is a mapping of its own (glibc's default
/// threshold for the same): smaller ones stay on the heap.
const MAPPED: usize = 128 << 10;

/// Floats on the heap, or for buffers of [`MAPPED`] bytes and more in an
/// anonymous mapping, which from a huge page on the system is asked to
/// back with huge pages. Those are only the 2 MiB-aligned stretches inside
/// the mapping, so the resident size is what the floats take, as on the
/// heap.
pub(crate) struct HugeBuf {
    storage: Storage,
}

enum Storage {
    Heap(Vec<f32>),
    /// The mapping, of the floats' bytes, and their count.
    Mapped(MmapMut, usize),
}

impl HugeBuf {
    /// `len` zeros.
    pub(crate) fn zeros(len: usize) -> HugeBuf {
        let bytes = len * size_of::<f32>();
        // A mapping that fails leaves the buffer on the heap, as does an
        // advice the system refuses (with huge pages off, the mapping
        // still serves).
        let mapped = (bytes >= MAPPED)
            .then(|| MmapMut::map_anon(bytes).ok())
            .flatten()
            .inspect(|map| {
                if bytes >= HUGE_PAGE {
                    let _ = map.advise(Advice::HugePage);
                }
            });
        let storage = match mapped {
            Some(map) => Storage::Mapped(map, len),
            None => Storage::Heap(vec![0.0; len]),
        };
        HugeBuf { storage }
    }

    /// `len` floats, each the next that `value` gives.
    pub(crate) fn from_fn(len: usize, mut value: impl FnMut() -> f32) -> HugeBuf {
        let mut buf = HugeBuf::zeros(len);
        buf.iter_mut().for_each(|v| *v = value());
        buf
    }
}

impl From<&[f32]> for HugeBuf {
    fn from(values: &[f32]) -> HugeBuf {
        let mut buf = HugeBuf::zeros(values.len());
        buf.copy_from_slice(values);
        buf
    }
}

impl Deref for HugeBuf {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.storage {
            Storage::Heap(v) => v,
            // A mapping starts on a page, aligned for floats.
            Storage::Mapped(map, len) => &bytemuck::cast_slice(map)[..*len],
        }
    }
}

impl DerefMut for HugeBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Heap(v) => v,
            Storage::Mapped(map, len) => &mut bytemuck::cast_slice_mut(map)[..*len],
        }
    }
}

impl Clone for HugeBuf {
    fn clone(&self) -> HugeBuf {
        HugeBuf::from(&self[..])
    }
}

impl PartialEq for HugeBuf {
    fn eq(&self, other: &HugeBuf) -> bool {
        self[..] == other[..]
    }
}

impl std::fmt::Debug for HugeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match self.storage {
            Storage::Heap(_) => "heap",
            Storage::Mapped(..) => "mapped",
        };
        write!(f, "HugeBuf({} floats, {place})", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers on either side of the threshold hold zeros, then what is
    /// written to them, and their clones the same.
    #[test]
    fn buffers_of_any_size_hold_what_is_written() {
        for len in [
            0,
            1,
            1000,
            MAPPED / 4 - 1,
            MAPPED / 4,
            HUGE_PAGE / 4 - 1,
            HUGE_PAGE / 4,
            HUGE_PAGE / 4 + 3,
        ] {
            let mut buf = HugeBuf::zeros(len);
            assert_eq!(buf.len(), len);
            // Linux maps anonymous memory of any size asked for.
            if cfg!(target_os = "linux") {
                let mapped = matches!(buf.storage, Storage::Mapped(..));
                assert_eq!(mapped, len * 4 >= MAPPED, "{len} floats mapped");
            }
            assert!(buf.iter().all(|&v| v == 0.0), "{len} floats start at zero");
            for (i, v) in buf.iter_mut().enumerate() {
                *v = i as f32 * 0.5;
            }
            let copy = buf.clone();
            for b in [&buf, &copy] {
                assert!(
                    b.iter().enumerate().all(|(i, &v)| v == i as f32 * 0.5),
                    "{len}"
                );
            }
        }
    }
}
