//! The virtual card's link to a real pcscd through vsmartcard-vpcd: the card is a TCP
//! client of the vpcd reader driver. One connection is one inserted card; closing it is a
//! removal. Frames both ways are a 2-byte big-endian length and the bytes; a 1-byte frame
//! from vpcd is a control (00 power off, 01 power on, 02 reset, 04 get ATR), a longer one a
//! command APDU.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::linux::net::TcpStreamExt;
use std::time::Duration;

use super::emulator::EmulatedCard;
use crate::card::CardError;

/// The ATR the virtual card presents: a CPS3 card's (docs/domain.md §3).
pub(crate) const CPS3_ATR: [u8; 17] = [
    0x3B, 0xAC, 0x00, 0x40, 0x2A, 0x00, 0x12, 0x25, 0x00, 0x64, 0x80, 0x00, 0x03, 0x10, 0x00, 0x90,
    0x00,
];

/// Inserts `card` into the vpcd reader listening on `127.0.0.1:port` and serves it until
/// vpcd closes the connection. Returns how the session ended. `on_reset` is told of each
/// reset the reader asks for (a program disconnecting with a reset: what ends every other
/// connection's verified PIN).
pub(crate) fn serve(
    card: &mut EmulatedCard,
    port: u16,
    delay: Duration,
    on_reset: &mut dyn FnMut(),
) -> Result<(), CardError> {
    let io = |e: std::io::Error| CardError::Transport(format!("vpcd on port {port}: {e}"));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
    // vpcd writes length and body separately with Nagle on: without these every APDU
    // waits ~40 ms for a delayed ACK (docs/test-harness.md).
    stream.set_nodelay(true).map_err(io)?;
    loop {
        let _ = stream.set_quickack(true);
        let mut header = [0u8; 2];
        if let Err(e) = stream.read_exact(&mut header) {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(())
            } else {
                Err(io(e))
            };
        }
        let mut frame = vec![0u8; usize::from(u16::from_be_bytes(header))];
        let _ = stream.set_quickack(true);
        stream.read_exact(&mut frame).map_err(io)?;
        let answer = match frame.as_slice() {
            [0x00] | [0x01] => {
                card.power_cycle();
                continue;
            }
            [0x02] => {
                card.power_cycle();
                on_reset();
                continue;
            }
            [0x04] => CPS3_ATR.to_vec(),
            [_] => continue,
            apdu => {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                card.process(apdu)
            }
        };
        // A card that does not answer (the silent fault): nothing is sent back, and the
        // link stays open until vpcd or the emulator's end closes it.
        if answer.is_empty() {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            return Ok(());
        }
        let length = u16::try_from(answer.len())
            .map_err(|_| CardError::Encoding("answer longer than 65535 bytes".into()))?;
        let mut out = length.to_be_bytes().to_vec();
        out.extend_from_slice(&answer);
        stream.write_all(&out).map_err(io)?;
    }
}
