//! Panel memory that is either packed in this process or mapped from a file packed earlier,
//! so a model whose panels were saved loads without writing (or even touching) fresh memory.

use std::ops::Deref;
use std::sync::Arc;

/// Bytes that stay put for as long as the `Arc` lives (e.g. a read-only memory map).
pub type Backing = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Element types panels are made of: plain numbers, valid for any bit pattern.
pub trait Plain: Copy + Send + Sync + 'static {}
impl Plain for f32 {}
impl Plain for u32 {}
impl Plain for u16 {}
impl Plain for i8 {}

pub(crate) enum Buf<T: Plain> {
    Owned(Vec<T>),
    Mapped {
        backing: Backing,
        offset: usize,
        len: usize,
    },
}

impl<T: Plain> Buf<T> {
    /// `len` elements of `backing` from byte `offset`, which must be aligned for `T` in memory
    /// and lie inside it.
    pub(crate) fn mapped(backing: Backing, offset: usize, len: usize) -> Result<Self, String> {
        let bytes = (*backing).as_ref();
        let size = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or("length overflows")?;
        let end = offset.checked_add(size).ok_or("length overflows")?;
        if end > bytes.len() {
            return Err(format!(
                "needs bytes {offset}..{end} of a {}-byte file",
                bytes.len()
            ));
        }
        let address = bytes.as_ptr() as usize + offset;
        if !address.is_multiple_of(std::mem::align_of::<T>()) {
            return Err(format!("offset {offset} is not aligned"));
        }
        Ok(Self::Mapped {
            backing,
            offset,
            len,
        })
    }

    /// The elements as raw bytes, for saving.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        let s: &[T] = self;
        // SAFETY: `T` is a plain number type; any initialised memory of `size_of_val(s)`
        // bytes may be read as bytes.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), std::mem::size_of_val(s)) }
    }
}

impl<T: Plain> Deref for Buf<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped {
                backing,
                offset,
                len,
            } => {
                let bytes = (**backing).as_ref();
                // SAFETY: checked in `mapped`: the range lies inside `bytes`, is aligned for
                // `T`, and `T` is valid for any bit pattern; `backing` keeps it alive and does
                // not move it.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().add(*offset).cast(), *len) }
            }
        }
    }
}
