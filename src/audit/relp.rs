//! RELP, rsyslog's reliable event logging protocol, client side: every message is a
//! numbered transaction the repository answers (`rsp 200`) once it has taken it. This is
//! what lets a shipper count a record delivered on the repository's word, not on TCP's.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. The session opens with `open`
//! (our offers: version 0, the `syslog` command), sends `syslog` transactions pipelined a
//! round at a time (the shipper's batch), and reads one `rsp` per transaction; anything else (a `serverclose`,
//! a status other than 200, a malformed frame) ends the session, and the unacknowledged
//! messages are sent again on the next.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a RELP session ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum RelpError {
    /// Writing to the repository failed.
    #[error("RELP write failed: {0}")]
    Write(std::io::Error),
    /// Reading from the repository failed.
    #[error("RELP read failed: {0}")]
    Read(std::io::Error),
    /// The connection ended.
    #[error("the repository closed the connection")]
    Closed,
    /// The repository ended the session (`serverclose`).
    #[error("the repository closed the session")]
    ServerClose,
    /// An answer that is not the `rsp` of the transaction awaited.
    #[error("unexpected RELP answer: {command} to transaction {txnr} (expected rsp to {expected})")]
    Unexpected {
        /// Its command (at most 16 characters).
        command: String,
        /// Its transaction number.
        txnr: u64,
        /// The transaction awaited.
        expected: u64,
    },
    /// The repository did not take a message.
    #[error("the repository refused transaction {txnr} (status {status})")]
    Refused {
        /// The transaction.
        txnr: u64,
        /// Its status.
        status: String,
    },
    /// Bytes that are not a RELP frame.
    #[error("malformed RELP frame: {0}")]
    Malformed(&'static str),
    /// The repository does not offer the `syslog` command.
    #[error("the repository does not take RELP syslog messages")]
    NoSyslog,
}

/// Longest response data accepted (an `rsp` is a status line and a few offers).
const MAX_DATA: usize = 64 * 1024;

/// A transport whose next acknowledgement can be sent at once rather than delayed.
///
/// The repository answers a round's transactions in small writes. Once our round is
/// written we send nothing more, so the kernel delays its ACKs (40 ms at least), and a
/// repository whose small writes wait for ACKs (Nagle) holds the round's last answers
/// that long: measured at about 40 ms per round. Linux clears `TCP_QUICKACK` on its own,
/// so it is set again before each read.
pub(super) trait PromptAcks {
    /// Asks for the next ACK to go at once (best effort).
    fn ack_promptly(&self);
}

impl PromptAcks for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    fn ack_promptly(&self) {
        // Only a latency hint: a socket that refuses it still delivers.
        let _ = self.get_ref().0.set_quickack(true);
    }
}

impl PromptAcks for tokio::io::DuplexStream {
    fn ack_promptly(&self) {}
}

/// An open RELP session over `S`.
pub(super) struct Session<S> {
    stream: S,
    next_txnr: u64,
    buffer: Vec<u8>,
    /// Where the unread part of `buffer` starts.
    read_at: usize,
}

/// One frame received.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    txnr: u64,
    command: String,
    data: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + PromptAcks> Session<S> {
    /// Opens a session on `stream` (already connected, TLS done).
    pub(super) async fn open(stream: S) -> Result<Self, RelpError> {
        let mut session = Self {
            stream,
            next_txnr: 1,
            buffer: Vec::new(),
            read_at: 0,
        };
        let offers = b"relp_version=0\nrelp_software=samu-gateway\ncommands=syslog";
        let txnr = session.write_frame("open", offers).await?;
        session.flush().await?;
        let answer = session.read_frame().await?;
        session.check_response(&answer, txnr)?;
        let offered = String::from_utf8_lossy(&answer.data);
        if !offered.lines().any(|l| {
            l.strip_prefix("commands=")
                .is_some_and(|c| c.split(',').any(|c| c == "syslog"))
        }) {
            return Err(RelpError::NoSyslog);
        }
        Ok(session)
    }

    /// Sends `messages` as transactions and waits for every acknowledgement; `Ok` only when
    /// the repository answered 200 to each, in order.
    ///
    /// The answers are read while the round is still being written: a repository answers
    /// each message as it takes it, and answers left unread pile up in our receive buffer
    /// as thousands of tiny TLS records until the repository's writes, then its reads, then
    /// ours stall. Reading them as they come also keeps a round of any size from
    /// deadlocking on full socket buffers in both directions.
    pub(super) async fn send(&mut self, messages: &[Vec<u8>]) -> Result<(), RelpError> {
        // One buffer for the whole round: the TLS layer then seals a few large records
        // instead of one per message.
        let mut frames = Vec::with_capacity(messages.iter().map(|m| m.len() + 32).sum());
        let mut sent = Vec::with_capacity(messages.len());
        for message in messages {
            sent.push(self.frame_into(&mut frames, "syslog", message));
        }
        let mut round = Round {
            frames,
            written: 0,
            flushed: false,
            sent,
            answered: 0,
        };
        std::future::poll_fn(|cx| self.poll_round(cx, &mut round)).await
    }

    /// Moves `round` on as far as the transport lets it: writes what it takes, reads and
    /// checks every answer that has come. Ready once all is written, flushed and answered.
    fn poll_round(
        &mut self,
        cx: &mut std::task::Context<'_>,
        round: &mut Round,
    ) -> std::task::Poll<Result<(), RelpError>> {
        use std::pin::Pin;
        use std::task::Poll;
        while round.written < round.frames.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &round.frames[round.written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(RelpError::Write(
                        std::io::ErrorKind::WriteZero.into(),
                    )));
                }
                Poll::Ready(Ok(n)) => round.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(RelpError::Write(e))),
                Poll::Pending => break,
            }
        }
        if round.written == round.frames.len() && !round.flushed {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => round.flushed = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(RelpError::Write(e))),
                Poll::Pending => {}
            }
        }
        while round.answered < round.sent.len() {
            if let Some(answer) = self.take_frame()? {
                self.check_response(&answer, round.sent[round.answered])?;
                round.answered += 1;
                continue;
            }
            self.stream.ack_promptly();
            let mut chunk = [0u8; 16 * 1024];
            let mut read = tokio::io::ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    return Poll::Ready(Err(RelpError::Closed));
                }
                Poll::Ready(Ok(())) => self.keep(read.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(RelpError::Read(e))),
                Poll::Pending => break,
            }
        }
        if round.flushed && round.answered == round.sent.len() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn check_response(&self, answer: &Frame, txnr: u64) -> Result<(), RelpError> {
        if answer.command == "serverclose" {
            return Err(RelpError::ServerClose);
        }
        if answer.command != "rsp" || answer.txnr != txnr {
            return Err(RelpError::Unexpected {
                command: answer.command.chars().take(16).collect(),
                txnr: answer.txnr,
                expected: txnr,
            });
        }
        let status: String = answer
            .data
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|b| char::from(*b))
            .collect();
        if status == "200" {
            Ok(())
        } else {
            Err(RelpError::Refused { txnr, status })
        }
    }

    async fn write_frame(&mut self, command: &str, data: &[u8]) -> Result<u64, RelpError> {
        let mut frame = Vec::new();
        let txnr = self.frame_into(&mut frame, command, data);
        self.stream
            .write_all(&frame)
            .await
            .map_err(RelpError::Write)?;
        Ok(txnr)
    }

    /// Appends the next transaction's frame to `out`; returns its number.
    fn frame_into(&mut self, out: &mut Vec<u8>, command: &str, data: &[u8]) -> u64 {
        use std::io::Write as _;
        let txnr = self.next_txnr;
        // Transaction numbers run 1 to 999 999 999, then wrap.
        self.next_txnr = if txnr >= 999_999_999 { 1 } else { txnr + 1 };
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{txnr} {command} {}", data.len());
        if !data.is_empty() {
            out.push(b' ');
            out.extend_from_slice(data);
        }
        out.push(b'\n');
        txnr
    }

    async fn flush(&mut self) -> Result<(), RelpError> {
        self.stream.flush().await.map_err(RelpError::Write)
    }

    /// Reads one frame, whatever the repository sends, within the bounds above.
    async fn read_frame(&mut self) -> Result<Frame, RelpError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(frame);
            }
            self.stream.ack_promptly();
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(RelpError::Read)?;
            if n == 0 {
                return Err(RelpError::Closed);
            }
            self.keep(&chunk[..n]);
        }
    }

    /// The next whole frame already received, if any.
    fn take_frame(&mut self) -> Result<Option<Frame>, RelpError> {
        let Some((frame, used)) = parse(&self.buffer[self.read_at..])? else {
            return Ok(None);
        };
        // Answers come many at a time: move past this one, and shift the buffer only once
        // it is all read (draining each frame off its front would copy the rest every time).
        self.read_at += used;
        if self.read_at == self.buffer.len() {
            self.buffer.clear();
            self.read_at = 0;
        }
        Ok(Some(frame))
    }

    /// Adds bytes received to the unread ones.
    fn keep(&mut self, received: &[u8]) {
        if self.read_at > 0 {
            self.buffer.drain(..self.read_at);
            self.read_at = 0;
        }
        self.buffer.extend_from_slice(received);
    }
}

/// A round of transactions under way (see `Session::send`).
struct Round {
    /// Every frame of the round, back to back.
    frames: Vec<u8>,
    /// How many of those bytes the transport took.
    written: usize,
    flushed: bool,
    /// The transaction numbers, in order.
    sent: Vec<u64>,
    /// How many of them were answered (200, checked).
    answered: usize,
}

/// A frame at the start of `input` and the bytes it used; `None` when more must be read.
fn parse(input: &[u8]) -> Result<Option<(Frame, usize)>, RelpError> {
    let malformed = |what: &'static str| Err(RelpError::Malformed(what));
    let mut fields = Vec::with_capacity(3);
    let mut at = 0;
    // TXNR, COMMAND, DATALEN: each ends at a space (DATALEN may end the frame at LF).
    while fields.len() < 3 {
        let Some(end) = input[at..]
            .iter()
            .take(32)
            .position(|b| *b == b' ' || *b == b'\n')
        else {
            return if input.len() - at >= 32 {
                malformed("a header field is too long")
            } else {
                Ok(None)
            };
        };
        fields.push(&input[at..at + end]);
        at += end;
        if input[at] == b'\n' && fields.len() < 3 {
            return malformed("the header ends early");
        }
        if fields.len() < 3 {
            at += 1;
        }
    }
    let number = |field: &[u8]| -> Option<u64> {
        (!field.is_empty() && field.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(field).ok()?.parse().ok())
            .flatten()
    };
    let (Some(txnr), Some(length)) = (number(fields[0]), number(fields[2])) else {
        return malformed("a transaction number or length is not a number");
    };
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length > MAX_DATA {
        return malformed("the data is too long");
    }
    let command = String::from_utf8_lossy(fields[1]).into_owned();
    // `at` is on the byte after DATALEN: LF (no data) or SP then data then LF.
    let data_start = if length == 0 { at } else { at + 1 };
    let end = data_start + length;
    if input.len() <= end {
        return Ok(None);
    }
    if length > 0 && input[at] != b' ' {
        return malformed("no space before the data");
    }
    if input[end] != b'\n' {
        return malformed("no line feed after the data");
    }
    let data = input[data_start..end].to_vec();
    Ok(Some((
        Frame {
            txnr,
            command,
            data,
        },
        end + 1,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_whole_or_wait_for_more() {
        let (frame, used) = parse(b"2 rsp 6 200 OK\n3 rsp").unwrap().unwrap();
        assert_eq!(
            frame,
            Frame {
                txnr: 2,
                command: "rsp".into(),
                data: b"200 OK".to_vec()
            }
        );
        assert_eq!(used, 15);
        assert!(parse(b"3 rsp").unwrap().is_none());
        assert!(parse(b"3 rsp 6 200").unwrap().is_none());
        let (frame, used) = parse(b"0 serverclose 0\n").unwrap().unwrap();
        assert_eq!(frame.command, "serverclose");
        assert!(frame.data.is_empty());
        assert_eq!(used, 16);
    }

    #[test]
    fn hostile_frames_are_errors_not_hangs_or_panics() {
        for bad in [
            &b"x rsp 0\n"[..],
            b"1 rsp y\n",
            b"1 rsp 99999999\n",
            b"1 rsp\n",
            b"1 rsp 2 okX",
            b"11111111111111111111111111111111111111111 rsp 0\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }
    }

    /// A repository answering each message before it reads the next, over buffers far
    /// smaller than the round: writing the whole round before reading any answer would
    /// leave both sides blocked on a full buffer.
    #[tokio::test]
    async fn a_round_larger_than_the_buffers_is_answered_while_it_is_written() {
        let (client, mut server) = tokio::io::duplex(1024);
        let repository = tokio::spawn(async move {
            let mut taken = 0usize;
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 512];
            loop {
                while let Ok(Some((frame, used))) = parse(&buffer) {
                    buffer.drain(..used);
                    let data = if frame.command == "open" {
                        "200 OK\ncommands=syslog"
                    } else {
                        taken += 1;
                        "200 OK"
                    };
                    let answer = format!("{} rsp {} {data}\n", frame.txnr, data.len());
                    server.write_all(answer.as_bytes()).await.unwrap();
                }
                let n = server.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return taken;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
        });
        let mut session = Session::open(client).await.unwrap();
        let round: Vec<Vec<u8>> = (0..2000)
            .map(|i| format!("<85>1 message {i:0>90}").into_bytes())
            .collect();
        tokio::time::timeout(std::time::Duration::from_secs(20), session.send(&round))
            .await
            .expect("the round deadlocked")
            .unwrap();
        drop(session);
        assert_eq!(repository.await.unwrap(), 2000);
    }

    #[tokio::test]
    async fn a_session_counts_only_acknowledged_transactions() {
        let (client, mut server) = tokio::io::duplex(4096);
        let repository = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                while let Ok(Some((frame, used))) = parse(&buffer) {
                    buffer.drain(..used);
                    let data = match frame.command.as_str() {
                        "open" => "200 OK\nrelp_version=0\ncommands=syslog",
                        // The third message is refused.
                        "syslog" if frame.txnr == 4 => "500 error",
                        _ => "200 OK",
                    };
                    let answer = format!("{} rsp {} {data}\n", frame.txnr, data.len());
                    seen.push(frame.command.clone());
                    server.write_all(answer.as_bytes()).await.unwrap();
                }
                let n = server.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return seen;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
        });
        let mut session = Session::open(client).await.unwrap();
        session
            .send(&[b"<85>1 first".to_vec(), b"<85>1 second".to_vec()])
            .await
            .unwrap();
        let refused = session.send(&[b"<85>1 third".to_vec()]).await.unwrap_err();
        assert!(refused.to_string().contains("status 500"), "{refused}");
        drop(session);
        assert_eq!(
            repository.await.unwrap(),
            ["open", "syslog", "syslog", "syslog"]
        );
    }
}
