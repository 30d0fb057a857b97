//! ISO 7816-4 APDUs: command encoding and decoding (short and extended lengths), response
//! parsing, status words as typed errors, and the T=0 conventions a reader may surface
//! (`61xx`: more data, fetch it with GET RESPONSE; `6Cxx`: wrong Le, resend with Le = xx).
//!
//! Everything here is a pure function of bytes: arbitrary card answers produce errors,
//! never panics (property-tested).

use super::CardError;
use zeroize::{Zeroize as _, Zeroizing};

/// Largest response the gateway accepts from a card, over all GET RESPONSE rounds.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// GET RESPONSE rounds at most: a card answering `61xx` forever must not hang a login.
const MAX_GET_RESPONSE: usize = 64;

/// A command APDU. Its `Debug` gives the data's length, not the data: a VERIFY's is the
/// PIN block.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    /// Class byte.
    pub cla: u8,
    /// Instruction.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data (Lc is its length), at most 65535 bytes.
    pub data: Vec<u8>,
    /// Expected response length: `None` for none, `Some(n)` with 1 ≤ n ≤ 65536.
    pub le: Option<usize>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command")
            .field("cla", &self.cla)
            .field("ins", &self.ins)
            .field("p1", &self.p1)
            .field("p2", &self.p2)
            .field("data_len", &self.data.len())
            .field("le", &self.le)
            .finish()
    }
}

/// A VERIFY's data is the PIN block: every command's data is wiped when it goes.
impl Drop for Command {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

impl Command {
    /// A command without data or Le.
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Self {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }

    /// Sets the data field.
    pub fn with_data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }

    /// Sets Le (256 asks for up to 256 bytes in a short APDU, 65536 in an extended one).
    pub fn with_le(mut self, le: usize) -> Self {
        self.le = Some(le);
        self
    }

    fn is_extended(&self) -> bool {
        self.data.len() > 255 || self.le.is_some_and(|le| le > 256)
    }

    /// Encodes the command, choosing short or extended lengths as needed.
    pub fn encode(&self) -> Result<Vec<u8>, CardError> {
        if self.data.len() > 65_535 || self.le.is_some_and(|le| le == 0 || le > 65_536) {
            return Err(CardError::Encoding(format!(
                "data of {} bytes / Le {:?} exceeds ISO 7816-4 limits",
                self.data.len(),
                self.le
            )));
        }
        let mut out = vec![self.cla, self.ins, self.p1, self.p2];
        let extended = self.is_extended();
        if !self.data.is_empty() {
            if extended {
                out.push(0);
                out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
            } else {
                out.push(self.data.len() as u8);
            }
            out.extend_from_slice(&self.data);
        }
        if let Some(le) = self.le {
            if extended {
                if self.data.is_empty() {
                    out.push(0);
                }
                out.extend_from_slice(&((le % 65_536) as u16).to_be_bytes());
            } else {
                out.push((le % 256) as u8);
            }
        }
        Ok(out)
    }

    /// Decodes a command APDU (the card emulator's side), covering the four ISO cases in
    /// short and extended form.
    pub fn decode(bytes: &[u8]) -> Result<Self, CardError> {
        let bad = |why: &str| CardError::Malformed(format!("command APDU: {why}"));
        let [cla, ins, p1, p2, body @ ..] = bytes else {
            return Err(bad("shorter than 4 bytes"));
        };
        let mut command = Self::new(*cla, *ins, *p1, *p2);
        match body {
            [] => {}
            [le] => command.le = Some(if *le == 0 { 256 } else { usize::from(*le) }),
            [0, hi, lo] => command.le = Some(extended_le(*hi, *lo)),
            [0, hi, lo, rest @ ..] => {
                let lc = usize::from(u16::from_be_bytes([*hi, *lo]));
                if lc == 0 {
                    return Err(bad("extended Lc of 0"));
                }
                match rest.len().checked_sub(lc) {
                    Some(0) => command.data = rest.to_vec(),
                    Some(2) => {
                        command.data = rest[..lc].to_vec();
                        command.le = Some(extended_le(rest[lc], rest[lc + 1]));
                    }
                    _ => return Err(bad("extended Lc does not match the body")),
                }
            }
            [lc, rest @ ..] => {
                let lc = usize::from(*lc);
                match rest.len().checked_sub(lc) {
                    Some(0) => command.data = rest.to_vec(),
                    Some(1) => {
                        command.data = rest[..lc].to_vec();
                        let le = rest[lc];
                        command.le = Some(if le == 0 { 256 } else { usize::from(le) });
                    }
                    _ => return Err(bad("Lc does not match the body")),
                }
            }
        }
        Ok(command)
    }
}

fn extended_le(hi: u8, lo: u8) -> usize {
    match u16::from_be_bytes([hi, lo]) {
        0 => 65_536,
        n => usize::from(n),
    }
}

/// A response APDU: data and status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Response data.
    pub data: Vec<u8>,
    /// SW1 SW2.
    pub sw: u16,
}

impl Response {
    /// Splits raw bytes into data and status word.
    pub fn parse(bytes: &[u8]) -> Result<Self, CardError> {
        match bytes {
            [data @ .., sw1, sw2] => Ok(Self {
                data: data.to_vec(),
                sw: u16::from_be_bytes([*sw1, *sw2]),
            }),
            _ => Err(CardError::Malformed(format!(
                "response of {} byte(s), shorter than a status word",
                bytes.len()
            ))),
        }
    }

    /// The data if the status word is success (`9000`), else the typed error.
    pub fn into_data(self) -> Result<Vec<u8>, CardError> {
        check_status(self.sw).map(|()| self.data)
    }
}

/// Maps a status word to success or to the error it means.
pub fn check_status(sw: u16) -> Result<(), CardError> {
    match sw {
        0x9000 => Ok(()),
        // No try left: the attempt that got this answer blocked the PIN (many IAS cards
        // say so rather than 6983, which comes on the attempt after).
        0x63C0 => Err(CardError::PinBlocked),
        0x63C1..=0x63CF => Err(CardError::WrongPin {
            tries_left: (sw & 0x0F) as u8,
        }),
        0x6983 => Err(CardError::PinBlocked),
        0x6982 => Err(CardError::SecurityStatusNotSatisfied),
        0x6A82 => Err(CardError::FileNotFound),
        0x6A88 => Err(CardError::ReferencedDataNotFound),
        0x6985 => Err(CardError::ConditionsNotSatisfied),
        0x6984 => Err(CardError::ReferenceDataNotUsable),
        0x6700 => Err(CardError::WrongLength),
        0x6A80 | 0x6A86 | 0x6B00 => Err(CardError::WrongParameters(sw)),
        0x6D00 => Err(CardError::InstructionNotSupported),
        0x6E00 => Err(CardError::ClassNotSupported),
        other => Err(CardError::Status(other)),
    }
}

/// Something that carries APDUs to a card (PC/SC, or the emulator in-process).
pub trait Transport {
    /// Sends one command APDU, returns the raw response (data + SW).
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError>;

    /// Has the reader collect the PIN on its own keypad and send the VERIFY of
    /// `verify_structure` (a `PIN_VERIFY_STRUCTURE`, see [`super::pinpad`]); returns the
    /// reader's two-byte answer. Transports without a PIN pad refuse.
    fn verify_pin_on_pad(&mut self, verify_structure: &[u8]) -> Result<Vec<u8>, CardError> {
        let _ = verify_structure;
        Err(CardError::PinPadUnavailable(
            "this reader has no PIN pad".into(),
        ))
    }
}

/// Sends `command` and returns the card's full answer, following `61xx` with GET RESPONSE
/// (bounded in rounds and size) and retrying once on `6Cxx` with the Le the card asks for.
pub fn exchange(transport: &mut dyn Transport, command: &Command) -> Result<Response, CardError> {
    // The encoded command may carry a PIN (VERIFY): wiped once sent.
    let mut response = Response::parse(&transport.transmit(&Zeroizing::new(command.encode()?))?)?;
    // "Wrong Le, use this one" concerns a command that expects data back; one without an
    // Le (a VERIFY, which carries the PIN) is never sent twice: a second presentation
    // could spend another try.
    if response.sw >> 8 == 0x6C && command.le.is_some() {
        let le = match response.sw & 0xFF {
            0 => 256,
            n => usize::from(n as u8),
        };
        let mut retry = command.clone();
        retry.le = Some(le);
        response = Response::parse(&transport.transmit(&Zeroizing::new(retry.encode()?))?)?;
    }
    let mut data = std::mem::take(&mut response.data);
    for _ in 0..MAX_GET_RESPONSE {
        if response.sw >> 8 != 0x61 {
            return Ok(Response {
                data,
                sw: response.sw,
            });
        }
        let le = match response.sw & 0xFF {
            0 => 256,
            n => usize::from(n as u8),
        };
        let get = Command::new(command.cla & 0x03, 0xC0, 0, 0).with_le(le);
        response = Response::parse(&transport.transmit(&get.encode()?)?)?;
        data.extend_from_slice(&response.data);
        if data.len() > MAX_RESPONSE {
            return Err(CardError::Malformed(format!(
                "card answer exceeds {MAX_RESPONSE} bytes"
            )));
        }
    }
    Err(CardError::Malformed(format!(
        "card still had more data after {MAX_GET_RESPONSE} GET RESPONSE rounds"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_the_four_cases_short_and_extended() {
        let select = Command::new(0, 0xA4, 4, 0).with_data(vec![0xE8, 0x28]);
        assert_eq!(select.encode().unwrap(), [0, 0xA4, 4, 0, 2, 0xE8, 0x28]);
        assert_eq!(
            Command::new(0, 0xB0, 0, 0).with_le(256).encode().unwrap(),
            [0, 0xB0, 0, 0, 0]
        );
        assert_eq!(
            Command::new(0, 0xB0, 0, 0)
                .with_le(65_536)
                .encode()
                .unwrap(),
            [0, 0xB0, 0, 0, 0, 0, 0]
        );
        let big = Command::new(0, 0x88, 0, 0)
            .with_data(vec![7; 300])
            .with_le(256);
        let encoded = big.encode().unwrap();
        assert_eq!(&encoded[4..7], &[0, 0x01, 0x2C]);
        assert_eq!(&encoded[encoded.len() - 2..], &[0x01, 0x00]);
        assert!(
            Command::new(0, 0, 0, 0)
                .with_data(vec![0; 70_000])
                .encode()
                .is_err()
        );
    }

    #[test]
    fn status_words_become_typed_errors() {
        assert_eq!(
            check_status(0x63C2),
            Err(CardError::WrongPin { tries_left: 2 })
        );
        assert_eq!(check_status(0x6983), Err(CardError::PinBlocked));
        assert_eq!(check_status(0x63C0), Err(CardError::PinBlocked));
        assert_eq!(
            check_status(0x6982),
            Err(CardError::SecurityStatusNotSatisfied)
        );
        assert_eq!(check_status(0x6A82), Err(CardError::FileNotFound));
        assert_eq!(check_status(0x9000), Ok(()));
        assert_eq!(check_status(0x6F00), Err(CardError::Status(0x6F00)));
    }

    #[test]
    fn a_command_never_prints_its_data() {
        let verify =
            Command::new(0x00, 0x20, 0x00, 0x01).with_data(b"4711\xff\xff\xff\xff".to_vec());
        let printed = format!("{verify:?}");
        assert!(printed.contains("data_len: 8"), "{printed}");
        assert!(
            !printed.contains("52, 55") && !printed.contains("4711"),
            "{printed}"
        );
    }

    /// Answers from a script, recording what was sent.
    struct Scripted {
        answers: Vec<Vec<u8>>,
        sent: Vec<Vec<u8>>,
    }

    impl Transport for Scripted {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
            self.sent.push(apdu.to_vec());
            if self.answers.is_empty() {
                return Err(CardError::Transport("script exhausted".into()));
            }
            Ok(self.answers.remove(0))
        }
    }

    #[test]
    fn follows_get_response_and_wrong_le_retry() {
        let mut card = Scripted {
            answers: vec![
                vec![0x61, 0x03],
                vec![1, 2, 3, 0x61, 0x01],
                vec![4, 0x90, 0x00],
            ],
            sent: vec![],
        };
        let response = exchange(&mut card, &Command::new(0, 0xB0, 0, 0).with_le(256)).unwrap();
        assert_eq!(
            response,
            Response {
                data: vec![1, 2, 3, 4],
                sw: 0x9000
            }
        );
        assert_eq!(card.sent[1], [0, 0xC0, 0, 0, 3]);

        let mut card = Scripted {
            answers: vec![vec![0x6C, 0x10], vec![9; 18]],
            sent: vec![],
        };
        let mut answer = vec![9; 16];
        answer.extend([0x90, 0x00]);
        card.answers[1] = answer;
        let response = exchange(&mut card, &Command::new(0, 0xB0, 0, 0).with_le(256)).unwrap();
        assert_eq!(response.data.len(), 16);
        assert_eq!(card.sent[1], [0, 0xB0, 0, 0, 0x10]);

        // A command with no Le (a VERIFY and its PIN) is sent once, whatever the card says.
        let mut card = Scripted {
            answers: vec![vec![0x6C, 0x10], vec![0x90, 0x00]],
            sent: vec![],
        };
        let verify = Command::new(0, 0x20, 0, 0x01).with_data(vec![0x31; 8]);
        let response = exchange(&mut card, &verify).unwrap();
        assert_eq!(response.sw, 0x6C10);
        assert_eq!(card.sent.len(), 1);
    }

    #[test]
    fn endless_more_data_is_cut_off() {
        let mut card = Scripted {
            answers: vec![vec![0x61, 0x00]; 200],
            sent: vec![],
        };
        assert!(matches!(
            exchange(&mut card, &Command::new(0, 0xB0, 0, 0)),
            Err(CardError::Malformed(_))
        ));
    }

    fn command() -> impl Strategy<Value = Command> {
        (
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..400),
            prop::option::of(1usize..=65_536),
        )
            .prop_map(|(cla, ins, p1, p2, data, le)| Command {
                cla,
                ins,
                p1,
                p2,
                data,
                le,
            })
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(c in command()) {
            prop_assert_eq!(Command::decode(&c.encode().unwrap()).unwrap(), c);
        }

        #[test]
        fn arbitrary_command_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = Command::decode(&bytes);
        }

        #[test]
        fn arbitrary_card_answers_never_panic_nor_hang(answers in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..80)) {
            let mut card = Scripted { answers, sent: vec![] };
            let result = exchange(&mut card, &Command::new(0, 0xB0, 0, 0).with_le(256));
            if let Ok(response) = result {
                prop_assert!(response.data.len() <= MAX_RESPONSE);
                let _ = response.into_data();
            }
            prop_assert!(card.sent.len() <= MAX_GET_RESPONSE + 2);
        }
    }
}
