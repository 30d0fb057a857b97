//! How many bytes written to a TCP connection its peer has not acknowledged yet: the
//! kernel's count (Linux `TIOCOUTQ`, also known as `SIOCOUTQ`). Shipping over RFC 5425
//! counts a batch delivered only when this is zero: every byte reached the repository's
//! host. This module is the crate's only unsafe code: one getter ioctl, as the rustix
//! crate writes its own (`ioctl_fionread`).
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::os::fd::AsFd;

/// `TIOCOUTQ` (`asm-generic/ioctls.h`), the same on every Linux architecture the gateway
/// runs on (x86-64, aarch64).
const TIOCOUTQ: rustix::ioctl::Opcode = 0x5411;

/// Bytes in `socket`'s send queue that the peer has not acknowledged.
pub(super) fn unacknowledged(socket: impl AsFd) -> std::io::Result<usize> {
    // SAFETY: TIOCOUTQ is a getter: the kernel writes one `c_int` (the count), which is
    // the output type declared here.
    let getter = unsafe { rustix::ioctl::Getter::<TIOCOUTQ, c_int>::new() };
    // SAFETY: the getter's opcode and output type match (above); `socket` is a live fd.
    let count = unsafe { rustix::ioctl::ioctl(socket, getter) }?;
    Ok(usize::try_from(count).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_connection_whose_peer_acknowledged_everything_has_nothing_pending() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while super::unacknowledged(&client).unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "never acknowledged");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
