//! One non-blocking client connection: a partial-line buffer for input, a queue for output.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

/// How much one `read` call may bring in. Lines are processed straight out of the caller's
/// scratch buffer, so each connection only keeps the bytes of an unfinished line.
const READ_CHUNK: usize = 64 * 1024;

pub struct Conn {
    pub stream: TcpStream,
    /// Bytes of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Bytes queued for writing; `out_pos` of them are already written.
    out: Vec<u8>,
    out_pos: usize,
    pub rx_bytes: u64,
    /// Re-arm TCP_QUICKACK after each read (see [`quickack`]).
    quickack: bool,
}

/// What one read brought.
pub enum Chunk {
    /// `read` new bytes arrived; complete lines fill the scratch buffer up to `end`.
    Lines { end: usize, read: usize },
    /// The server closed the connection.
    Eof,
}

impl Conn {
    /// Starts a non-blocking connect; it completes (or fails) on the first readiness event.
    /// `rcvbuf` sets the socket's receive buffer (0 keeps the kernel's default).
    pub fn connect(addr: SocketAddr, rcvbuf: usize, quickack: bool) -> io::Result<Conn> {
        let stream = if rcvbuf > 0 {
            // The receive buffer must be set before connecting to bound the TCP window.
            let socket = std::net::TcpStream::from(open_socket_with_rcvbuf(rcvbuf)?);
            connect_nonblocking(socket, addr)?
        } else {
            TcpStream::connect(addr)?
        };
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            partial: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            rx_bytes: 0,
            quickack,
        })
    }

    /// The buffer that [`Conn::flush`] writes; append commands here.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    pub fn has_output(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Writes queued output until done or the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Reads once into `scratch` (after any partial line left from before). On
    /// `Chunk::Lines { end, .. }`, `scratch[..end]` holds complete lines; the caller handles them and
    /// then calls [`Conn::keep_partial`]. `WouldBlock` means there is nothing more for now.
    pub fn read_chunk(&mut self, scratch: &mut Vec<u8>) -> io::Result<Chunk> {
        scratch.clear();
        scratch.append(&mut self.partial);
        let filled = scratch.len();
        scratch.resize(filled + READ_CHUNK, 0);
        let n = loop {
            match self.stream.read(&mut scratch[filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    scratch.truncate(filled);
                    self.partial.extend_from_slice(scratch);
                    return Err(e);
                }
                Ok(n) => break n,
            }
        };
        scratch.truncate(filled + n);
        if n == 0 {
            return Ok(Chunk::Eof);
        }
        self.rx_bytes += n as u64;
        if self.quickack {
            quickack(&self.stream);
        }
        let end = scratch
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        Ok(Chunk::Lines { end, read: n })
    }

    /// Keeps the unfinished line at the end of `scratch` for the next read.
    pub fn keep_partial(&mut self, scratch: &[u8], end: usize) {
        self.partial.extend_from_slice(&scratch[end..]);
    }
}

/// Iterates the lines in `bytes` (each ending in `\n`, which is not included).
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .strip_suffix(b"\n")
        .unwrap_or(bytes)
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
}

fn open_socket_with_rcvbuf(rcvbuf: usize) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2)/setsockopt(2) calls; the fd is owned immediately.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(owned)
    }
}

fn connect_nonblocking(socket: std::net::TcpStream, addr: SocketAddr) -> io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::other(
            "a small receive buffer needs an IPv4 address",
        ));
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect(2) on a socket we own with a correctly sized sockaddr_in.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    Ok(TcpStream::from_std(socket))
}

/// Asks the kernel to acknowledge received data at once instead of delaying the ACK. The
/// kernel drops back to delayed ACKs by itself, so this is re-armed after every read.
fn quickack(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt(2) on a socket we own, with a correctly sized int option.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
