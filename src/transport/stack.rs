//! Handing back the stack pages a deep command touched.
//!
//! A thread's stack pages, once touched, stay resident for the thread's life. A reader thread
//! spends that life blocked in `read` a little below the top of its stack, but the commands it
//! carries out go deeper. Measured on x86-64 (`/proc/PID/mem`, BENCHMARKS.md): a reader
//! waiting for its first line has touched 6.9 KiB (4.6 KiB of it is glibc's thread descriptor
//! and TLS, at the top of the stack), LOGIN reaches 9.1 KiB and JOIN 10.7 KiB. So a session
//! that logged in holds a third reader page, 4 KiB, for nothing, thousands of times over.
//!
//! When a reader has been idle for a while ([`crate::transport::reader`] decides when), it
//! calls [`release_below_here`]: the pages under its current frame are handed back to the
//! kernel with `madvise(MADV_DONTNEED)`, and the next deep command faults them in again,
//! zeroed, at about a microsecond a page.
//!
//! Why this is sound: memory below the deepest live frame holds nothing a program may read;
//! the ABI lets a callee overwrite it at any time. The range starts at the first page
//! boundary at least [`MARGIN`] below a local of `release_below_here` (so the `madvise`
//! call's own frame and x86-64's 128-byte red zone lie above it), and it spans [`DEPTH`],
//! far less than a reader's stack ([`crate::transport::listener::READER_STACK`], 256 KiB,
//! for every front door), so it never leaves the stack's own mapping. A signal is delivered
//! only on the way back from the system call, after the pages are gone, and its handler may
//! use them as any callee would.

/// How far below the current frame pages are released: well past the deepest command
/// measured (about 4 KiB below the reader's resting frame), far short of the stack's end.
const DEPTH: usize = 32 * 1024;

/// What is kept below this function's local: room for the `madvise` call's frame and the
/// red zone under it (together under 256 bytes on x86-64), four times over.
const MARGIN: usize = 1024;

/// Releases the whole stack pages from [`MARGIN`] below this function's frame down to
/// [`DEPTH`] further. Not inlined, so its local really is the deepest live frame but the
/// system call's.
#[inline(never)]
pub fn release_below_here() {
    let page = page_size();
    let here = std::hint::black_box(0u8);
    let here = std::ptr::addr_of!(here) as usize;
    let end = (here - MARGIN) & !(page - 1);
    let start = end - DEPTH;
    // SAFETY: [start, end) lies below every live frame of this thread (see the module
    // comment) and inside its stack mapping; MADV_DONTNEED on private anonymous memory only
    // makes the pages read as zero when next touched, which no live data depends on.
    // An error (none is expected) leaves the pages where they were; nothing else changes.
    unsafe {
        libc::madvise(start as *mut libc::c_void, DEPTH, libc::MADV_DONTNEED);
    }
}

fn page_size() -> usize {
    use std::sync::OnceLock;
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills a 16 KiB frame below the caller (so its pages are touched) and returns its sum,
    /// which depends on `seed` so a page that came back wrong would change it.
    #[inline(never)]
    fn go_deep(seed: u8) -> u64 {
        let mut frame = [0u8; 16 * 1024];
        for (i, byte) in frame.iter_mut().enumerate() {
            *byte = seed.wrapping_add(i as u8);
        }
        std::hint::black_box(&mut frame);
        frame.iter().map(|b| u64::from(*b)).sum()
    }

    /// How many of the `pages` pages below the caller's frame are resident (`mincore`).
    #[inline(never)]
    fn resident_below_here(pages: usize) -> usize {
        let page = page_size();
        let here = std::hint::black_box(0u8);
        let end = (std::ptr::addr_of!(here) as usize & !(page - 1)) - page;
        let start = end - pages * page;
        let mut resident = vec![0u8; pages];
        // SAFETY: the range is inside this thread's stack mapping (256 KiB, see below) and
        // `resident` has one byte per page.
        let status = unsafe {
            libc::mincore(
                start as *mut libc::c_void,
                pages * page,
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(status, 0, "mincore: {}", std::io::Error::last_os_error());
        resident.iter().filter(|r| *r & 1 == 1).count()
    }

    #[test]
    fn deep_pages_are_released_and_come_back_zeroed_on_use() {
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let expected: Vec<u64> = (0..20u8).map(go_deep).collect();
                for (round, seed) in (0..20u8).enumerate() {
                    assert_eq!(go_deep(seed), expected[round]);
                    assert!(resident_below_here(2) > 0, "the deep frame touched no page");
                    release_below_here();
                    assert_eq!(resident_below_here(2), 0, "pages left after release");
                }
            })
            .expect("spawn");
        handle.join().expect("the thread ran to the end");
    }
}
